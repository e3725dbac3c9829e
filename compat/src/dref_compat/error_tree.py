"""A backend's exceptions extend `dref.errors` from one module, whose docstring draws them.

```python
from dref_compat.error_tree import check_error_module

def test_errors_live_in_one_module() -> None:
    assert check_error_module("dref_mybackend") == []
```
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

from dref.errors import DRefError

__all__ = ["check_error_module", "exception_classes"]


def exception_classes(package: str) -> list[type[BaseException]]:
    """Exception classes defined in `package` and its submodules (nested in classes too)."""
    found: list[type[BaseException]] = []
    for module_name in _modules(package):
        module = importlib.import_module(module_name)
        pending = list(vars(module).values())
        while pending:
            obj = pending.pop()
            if isinstance(obj, type) and obj.__module__ == module_name and obj not in found:
                if issubclass(obj, BaseException):
                    found.append(obj)
                pending.extend(vars(obj).values())
    return sorted(found, key=lambda cls: (cls.__module__, cls.__qualname__))


def check_error_module(package: str) -> list[str]:
    """What breaks the rule in `package`: every exception class is defined in
    `<package>.errors`, extends `dref.errors.DRefError` and is named in that module's docstring.
    """
    home = f"{package}.errors"
    problems: list[str] = []
    for cls in exception_classes(package):
        where = f"{cls.__module__}.{cls.__qualname__}"
        if cls.__module__ != home:
            problems.append(f"{where} is defined outside {home}")
        if not issubclass(cls, DRefError):
            problems.append(f"{where} does not extend dref.errors.DRefError")
        elif cls.__module__ == home:
            doc = importlib.import_module(home).__doc__ or ""
            if cls.__name__ not in doc:
                problems.append(f"{where} is missing from the tree in {home}'s docstring")
    return problems


def _modules(package: str) -> Iterator[str]:
    root = importlib.import_module(package)
    yield package
    path = getattr(root, "__path__", None)
    if path is not None:
        for info in pkgutil.walk_packages(path, f"{package}."):
            yield info.name
