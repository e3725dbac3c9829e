"""Type-directed conversion between Python values and plain msgpack/JSON data (both codecs use it).

"Plain" data is what the serializer writes natively: None, bool, int, float, str, list, dict (and
tuples as map keys in msgpack). A `Format` holds the few rules in which the wire forms differ
(bytes, `Optional`, map keys) and caches one compiled `Converter` per type, so a call does no
typing introspection after the first one for that type.

Decoding errors are raised internally as `Mismatch`, which collects the path on its way up
(`$.items[3].name`) and becomes a `CodecError` at the codec boundary.
"""

from __future__ import annotations

import base64
import binascii
import collections.abc as abc
import dataclasses
import enum
import keyword
import sys
import threading
import types
import typing
from array import array
from collections.abc import Callable, Iterable
from typing import Any, Literal, NewType, TypeVar, get_args, get_origin, get_type_hints

from dref.errors import CodecError

__all__ = [
    "JSON",
    "MSGPACK_RUST",
    "MSGPACK_SCALA",
    "SCALARS",
    "Converter",
    "Format",
    "Mismatch",
    "byte_array",
    "bytes_from_array",
    "describe",
]

Fn = Callable[[Any], Any]

NoneType = type(None)
SCALARS: frozenset[type] = frozenset({str, int, float, bool, NoneType})
"""Classes every serializer writes as they are: `encode` passes them straight through."""

_MISSING: Any = object()
_BYTE = "a byte (int in -128..255)"


def describe(value: Any) -> str:
    """A short description of a decoded value for error messages."""
    if isinstance(value, list | tuple):
        return f"array of {len(value)} items"
    if isinstance(value, dict):
        return f"map of {len(value)} entries"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{value.__class__.__name__} {text}"


def type_name(tp: Any) -> str:
    """`int`, `list[Point]`, `Optional[str]`: a type as people write it."""
    if isinstance(tp, type) and not get_args(tp):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


class Mismatch(Exception):
    """A decoded value does not fit the target type; `path` is collected innermost first."""

    def __init__(self, message: str, value: Any = _MISSING) -> None:
        super().__init__(message)
        self.message = message
        self.value = value
        self.path: list[str] = []

    def at(self, segment: str) -> Mismatch:
        self.path.append(segment)
        return self

    def error(self, prefix: str = "") -> CodecError:
        where = "$" + "".join(reversed(self.path))
        got = "" if self.value is _MISSING else f", got {describe(self.value)}"
        return CodecError(f"{prefix}{self.message} at {where}{got}")


def expected(what: str, value: Any) -> Mismatch:
    return Mismatch(f"expected {what}", value)


# -- bytes as an int array (upstream's Chunk[Byte] / Vec<u8>) ------------------------------------


def byte_array(data: bytes, *, signed: bool) -> list[int]:
    """`data` as one int per byte: signed (-128..127, Scala `Chunk[Byte]`) or unsigned (Rust)."""
    return array("b", data).tolist() if signed else list(data)


def bytes_from_array(items: list[Any] | tuple[Any, ...]) -> bytes:
    """Inverse of `byte_array`, accepting both forms (a negative int is `b & 0xFF`)."""
    try:
        return bytes(items)
    except (TypeError, ValueError):
        pass
    for i, item in enumerate(items):
        if item.__class__ is not int or not -128 <= item <= 255:
            raise expected(_BYTE, item).at(f"[{i}]")
    return bytes([item & 0xFF for item in items])


# -- converters -----------------------------------------------------------------------------------


class Converter:
    """Compiled conversion for one type: `dec` plain → value (raises Mismatch), `enc` the reverse.

    `accepts_array` tells whether some array decodes to this type, which makes a Scala-style
    Option (`[]`/`[x]`) around it ambiguous.
    """

    __slots__ = ("accepts_array", "dec", "enc", "what")

    def __init__(self, what: str, dec: Fn, enc: Fn, *, accepts_array: bool = False) -> None:
        self.what = what
        self.dec = dec
        self.enc = enc
        self.accepts_array = accepts_array


def _ordered(items: Iterable[Any]) -> list[Any]:
    """Set elements in sorted order when they sort, so equal sets encode to equal bytes."""
    try:
        return sorted(items)
    except TypeError:
        return list(items)


def _locate(error: Mismatch, items: Iterable[tuple[Any, Any]], dec: Fn) -> Mismatch:
    """Find which `(segment, value)` made a comprehension fail (only called on the error path)."""
    for segment, item in items:
        try:
            dec(item)
        except Mismatch as exc:
            return exc.at(segment)
    return error


def _is_model(tp: type) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and issubclass(tp, pydantic.BaseModel)


def _is_struct(tp: type) -> bool:
    return (
        dataclasses.is_dataclass(tp)
        or _is_model(tp)
        or (issubclass(tp, tuple) and hasattr(tp, "_fields"))
    )


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in (typing.Union, types.UnionType) and NoneType in get_args(tp)


_LISTS = {list, abc.Sequence, abc.MutableSequence}
_DICTS = {dict, abc.Mapping, abc.MutableMapping}
_SETS = {set, abc.Set, abc.MutableSet}


class Format:
    """One wire form (msgpack as Scala writes it, as Rust writes it, or JSON) and its converters."""

    def __init__(
        self,
        name: str,
        *,
        bytes_form: Literal["signed", "unsigned", "base64"],
        wrap_options: bool,
        prefer_wrapped: bool,
        accept_wrapped: bool,
        str_keys: bool,
    ) -> None:
        self.name = name
        self.bytes_form = bytes_form
        self.wrap_options = wrap_options
        """Encode `Optional` as `[]`/`[x]` (zio-schema) instead of nil/x (serde, JSON)."""
        self.prefer_wrapped = prefer_wrapped
        """Read an ambiguous `[]`/`[x]` as the Option wrapper first."""
        self.accept_wrapped = accept_wrapped
        self.str_keys = str_keys
        self._cache: dict[Any, Converter] = {}
        self._pending: dict[Any, Converter] | None = None
        self._lock = threading.RLock()
        self.plain = self._make_plain()
        self._any = Converter("any value", lambda v: v, self.plain, accepts_array=True)
        self._builtins = self._make_builtins()

    def __repr__(self) -> str:
        return f"<Format {self.name}>"

    # -- value-directed encoding ------------------------------------------------------------------
    def encode_bytes(self, data: bytes) -> Any:
        if self.bytes_form == "base64":
            return base64.b64encode(data).decode("ascii")
        return byte_array(data, signed=self.bytes_form == "signed")

    def _make_plain(self) -> Fn:
        """The encoder used when no type is known: dispatch on the value's class."""
        handlers: dict[type, Fn] = {}

        def plain(value: Any) -> Any:
            cls = value.__class__
            if cls in SCALARS:
                return value
            handler = handlers.get(cls)
            if handler is None:
                handler = handlers[cls] = self._handler(cls)
            return handler(value)

        # Containers of scalars (the common case) are checked, not copied.
        def plain_list(value: Any) -> Any:
            for item in value:
                if item.__class__ not in SCALARS:
                    return [x if x.__class__ in SCALARS else plain(x) for x in value]
            return value

        def plain_set(value: Any) -> Any:
            return plain_list(_ordered(value))

        key = self.plain_key

        def plain_dict(value: Any) -> Any:
            for k, v in value.items():
                if k.__class__ is not str or v.__class__ not in SCALARS:
                    return {
                        (k if k.__class__ is str else key(k)): (
                            v if v.__class__ in SCALARS else plain(v)
                        )
                        for k, v in value.items()
                    }
            return value

        self._plain_list, self._plain_set, self._plain_dict = plain_list, plain_set, plain_dict
        handlers.update(
            {
                list: plain_list,
                tuple: plain_list,
                dict: plain_dict,
                set: plain_set,
                frozenset: plain_set,
                bytes: self.encode_bytes,
            }
        )
        return plain

    def _handler(self, cls: type) -> Fn:
        """How `plain` encodes instances of `cls` (cached per class by `plain`)."""
        if issubclass(cls, enum.Enum):
            return _enum_name
        if _is_struct(cls):
            return self.converter(cls).enc
        for base, handler in (
            (int, int),
            (float, float),
            (str, str),
            (dict, self._plain_dict),
            (list, self._plain_list),
            (tuple, self._plain_list),
            (set, self._plain_set),
            (frozenset, self._plain_set),
        ):
            if issubclass(cls, base):
                return handler
        if issubclass(cls, bytes | bytearray | memoryview):
            return lambda v: self.encode_bytes(bytes(v))
        raise CodecError(f"cannot encode a value of type {cls.__module__}.{cls.__qualname__}")

    def plain_key(self, key: Any) -> Any:
        """A map key: hashable for msgpack (arrays become tuples), a str for JSON."""
        if self.str_keys:
            if key.__class__ is str:
                return key
            if isinstance(key, enum.Enum):
                return key.name
            if isinstance(key, int) and not isinstance(key, bool):
                return str(int(key))
            if isinstance(key, str):
                return str(key)
            raise CodecError(
                f"cannot encode a map key of type {key.__class__.__qualname__} as JSON "
                "(keys must be str, int or enum members)"
            )
        return key if key.__class__ in SCALARS else _freeze(self.plain(key))

    # -- compiled converters ----------------------------------------------------------------------
    def converter(self, tp: Any) -> Converter:
        """The cached converter of `tp`, compiled on first use.

        Converters compiled together (a struct and its field types, possibly recursive) are
        published to the shared cache only once all of them are complete.
        """
        try:
            return self._cache[tp]
        except KeyError:
            pass
        except TypeError:  # an unhashable type expression: compiled every time
            with self._lock:
                return self._compile(tp)
        with self._lock:
            conv = self._cache.get(tp)
            if conv is not None:
                return conv
            outermost = self._pending is None
            pending = self._pending = {} if self._pending is None else self._pending
            try:
                conv = pending.get(tp) or self._compile(tp)
                pending[tp] = conv
                if outermost:
                    self._cache.update(pending)
            finally:
                if outermost:
                    self._pending = None
            return conv

    def _make_builtins(self) -> dict[Any, Converter]:
        def scalar(cls: type) -> Converter:
            name = cls.__name__

            def dec(v: Any) -> Any:
                if v.__class__ is cls:
                    return v
                raise expected(name, v)

            return Converter(name, dec, self.plain)

        def dec_float(v: Any) -> Any:
            cls = v.__class__
            if cls is float:
                return v
            if cls is int:
                return float(v)
            raise expected("float", v)

        base64_form = self.bytes_form == "base64"
        bytes_what = (
            "bytes (base64 string or array of byte ints)"
            if base64_form
            else "bytes (bin or array of byte ints)"
        )

        def dec_bytes(v: Any) -> Any:
            cls = v.__class__
            if cls is bytes:
                return v
            if cls is list or cls is tuple:
                return bytes_from_array(v)
            if cls is str and base64_form:
                try:
                    return base64.b64decode(v, validate=True)
                except (binascii.Error, ValueError):
                    pass
            raise expected(bytes_what, v)

        def dec_none(v: Any) -> Any:
            if v is None:
                return None
            raise expected("None", v)

        return {
            int: scalar(int),
            str: scalar(str),
            bool: scalar(bool),
            float: Converter("float", dec_float, self.plain),
            bytes: Converter(bytes_what, dec_bytes, self.plain, accepts_array=True),
            NoneType: Converter("None", dec_none, self.plain),
            None: Converter("None", dec_none, self.plain),
            Any: self._any,
            object: self._any,
        }

    def _compile(self, tp: Any) -> Converter:
        try:
            builtin = self._builtins.get(tp)
        except TypeError:
            builtin = None
        if builtin is not None:
            return builtin
        origin, args = get_origin(tp), get_args(tp)
        if origin is typing.Annotated:
            return self.converter(args[0])
        if origin in (typing.Union, types.UnionType):
            return self._union(tp, args)
        if origin is Literal:
            return self._literal(tp, args)
        if isinstance(tp, TypeVar):
            return self._any
        if isinstance(tp, NewType):
            return self.converter(tp.__supertype__)
        if origin is None and isinstance(tp, type):
            origin, args = (tp, ()) if tp in (list, tuple, dict, set, frozenset) else (None, ())
        if origin in _LISTS:
            return self._sequence(tp, args[0] if args else Any, list)
        if origin is tuple:
            if tp is tuple or (len(args) == 2 and args[1] is Ellipsis):
                return self._sequence(tp, args[0] if args else Any, tuple)
            return self._tuple(tp, args)
        if origin in _DICTS:
            return self._dict(tp, *(args or (Any, Any)))
        if origin in _SETS or origin is frozenset:
            build = frozenset if origin is frozenset else set
            return self._sequence(tp, args[0] if args else Any, build)
        if isinstance(origin, type) and _is_struct(origin):  # a generic struct, e.g. Box[int]
            return self.converter(origin)
        if isinstance(tp, type):
            if issubclass(tp, enum.Enum):
                return self._enum(tp)
            if _is_struct(tp):
                return self._struct(tp)
        raise CodecError(f"unsupported type {type_name(tp)}")

    def _union(self, tp: Any, args: tuple[Any, ...]) -> Converter:
        members = [arg for arg in args if arg is not NoneType]
        if len(members) < len(args):
            rest = members[0] if len(members) == 1 else typing.Union[tuple(members)]  # noqa: UP007
            return self._optional(tp, self.converter(rest))
        convs = [self.converter(arg) for arg in members]
        what = " | ".join(conv.what for conv in convs)

        def dec(v: Any) -> Any:
            for conv in convs:
                try:
                    return conv.dec(v)
                except Mismatch:
                    pass
            raise expected(what, v)

        return Converter(what, dec, self.plain, accepts_array=any(c.accepts_array for c in convs))

    def _optional(self, tp: Any, inner: Converter) -> Converter:
        inner_dec, inner_enc, wrap = inner.dec, inner.enc, self.wrap_options
        what = f"{inner.what} or None"

        def unwrap(v: Any) -> Any:
            if not v:
                return None
            try:
                return inner_dec(v[0])
            except Mismatch as exc:
                raise exc.at("[0]") from None

        def bare(v: Any) -> Any:
            return inner_dec(v)

        first, second = (unwrap, bare) if self.prefer_wrapped else (bare, unwrap)
        ambiguous, accept_wrapped = inner.accepts_array, self.accept_wrapped

        def dec(v: Any) -> Any:
            if v is None:
                return None
            cls = v.__class__
            if accept_wrapped and (cls is list or cls is tuple) and len(v) <= 1:
                if not ambiguous:
                    return unwrap(v)
                try:
                    return first(v)
                except Mismatch as exc:
                    error = exc
                try:
                    return second(v)
                except Mismatch:
                    raise error from None
            try:
                return inner_dec(v)
            except Mismatch as exc:
                if exc.path or exc.value is not v:
                    raise
                raise expected(what, v) from None  # about `v` itself: mention None too

        def enc_wrapped(v: Any) -> Any:
            return [] if v is None else [inner_enc(v)]

        def enc_bare(v: Any) -> Any:
            return None if v is None else inner_enc(v)

        encoder: Fn = enc_wrapped if wrap else enc_bare
        if not wrap and inner_enc is self.plain:
            encoder = self.plain
        return Converter(what, dec, encoder, accepts_array=ambiguous or accept_wrapped)

    def _literal(self, tp: Any, args: tuple[Any, ...]) -> Converter:
        allowed = {(self.plain(arg).__class__, self.plain(arg)): arg for arg in args}
        what = " | ".join(repr(arg) for arg in args)

        def dec(v: Any) -> Any:
            try:
                return allowed[v.__class__, v]
            except (KeyError, TypeError):
                raise expected(what, v) from None

        return Converter(what, dec, self.plain)

    def _sequence(self, tp: Any, item_tp: Any, build: type) -> Converter:
        item = self.converter(item_tp)
        item_dec, item_enc, plain = item.dec, item.enc, self.plain
        what = f"{type_name(tp)} (array)"
        unhashable = f"hashable elements for {type_name(tp)}"

        def dec(v: Any) -> Any:
            cls = v.__class__
            if cls is not list and cls is not tuple:
                raise expected(what, v)
            try:
                out = [item_dec(x) for x in v]
                return out if build is list else build(out)
            except Mismatch as exc:
                raise _locate(exc, ((f"[{i}]", x) for i, x in enumerate(v)), item_dec) from None
            except TypeError:
                raise expected(unhashable, v) from None

        def dec_list(v: Any) -> Any:
            cls = v.__class__
            if cls is list:
                return v
            if cls is tuple:
                return list(v)
            raise expected(what, v)

        def enc(v: Any) -> Any:
            if isinstance(v, list | tuple):
                return [item_enc(x) for x in v]
            if isinstance(v, set | frozenset):
                return [item_enc(x) for x in _ordered(v)]
            return plain(v)

        decoder: Fn = dec_list if item is self._any and build is list else dec
        encoder: Fn = plain if item_enc is plain else enc
        return Converter(what, decoder, encoder, accepts_array=True)

    def _tuple(self, tp: Any, args: tuple[Any, ...]) -> Converter:
        convs = [self.converter(arg) for arg in args]
        decs, encs, plain = [c.dec for c in convs], [c.enc for c in convs], self.plain
        what = f"{type_name(tp)} (array of {len(args)})"

        def dec(v: Any) -> Any:
            cls = v.__class__
            if (cls is not list and cls is not tuple) or len(v) != len(decs):
                raise expected(what, v)
            out = []
            for i, (item_dec, x) in enumerate(zip(decs, v, strict=True)):
                try:
                    out.append(item_dec(x))
                except Mismatch as exc:
                    raise exc.at(f"[{i}]") from None
            return tuple(out)

        def enc(v: Any) -> Any:
            if isinstance(v, tuple) and len(v) == len(encs):
                return [item_enc(x) for item_enc, x in zip(encs, v, strict=True)]
            return plain(v)

        typed = any(e is not plain for e in encs)
        return Converter(what, dec, enc if typed else plain, accepts_array=True)

    def _dict(self, tp: Any, key_tp: Any, value_tp: Any) -> Converter:
        key, value = self.converter(key_tp), self.converter(value_tp)
        key_dec, value_dec, value_enc = key.dec, value.dec, value.enc
        if self.str_keys and key_tp is int:
            key_dec = _int_key
        what = f"{type_name(tp)} (map)"
        plain, plain_key = self.plain, self.plain_key

        def dec(v: Any) -> Any:
            if v.__class__ is not dict:
                raise expected(what, v)
            try:
                return {key_dec(k): value_dec(x) for k, x in v.items()}
            except Mismatch as exc:
                located = _locate(exc, ((f"[key {k!r}]", k) for k in v), key_dec)
                if located is exc:
                    located = _locate(exc, ((_key_segment(k), x) for k, x in v.items()), value_dec)
                raise located from None

        def enc(v: Any) -> Any:
            if isinstance(v, dict):
                return {plain_key(k): value_enc(x) for k, x in v.items()}
            return plain(v)

        return Converter(what, dec, plain if value_enc is plain else enc)

    def _enum(self, cls: type[enum.Enum]) -> Converter:
        members = list(cls)
        by_name: dict[str, enum.Enum] = {
            **{m.value: m for m in members if isinstance(m.value, str)},
            **cls.__members__,
        }
        what = f"{cls.__qualname__} (variant name or index)"

        def dec(v: Any) -> Any:
            cls_ = v.__class__
            if cls_ is str:
                member = by_name.get(v)
                if member is not None:
                    return member
            elif cls_ is int and 0 <= v < len(members):
                return members[v]
            raise expected(what, v)

        return Converter(what, dec, self.plain)

    def _struct(self, cls: type) -> Converter:
        """Dataclasses, pydantic models and NamedTuples; registered before its fields compile."""
        # Until compiled, a (recursive) reference goes through these trampolines.
        conv = Converter(
            f"{cls.__qualname__} (map or array)",
            lambda v: conv.dec(v),
            lambda v: conv.enc(v),
            accepts_array=True,
        )
        assert self._pending is not None
        self._pending[cls] = conv
        self._fill_struct(conv, cls)
        return conv

    def _fill_struct(self, conv: Converter, cls: type) -> None:
        spec = _StructSpec.of(cls)
        fields: list[_Field] = []
        for name, tp in spec.types.items():
            try:
                field = self.converter(tp)
            except CodecError as exc:
                raise CodecError(f"{exc} (field {cls.__qualname__}.{name})") from None
            fields.append(
                _Field(
                    name=name,
                    conv=field,
                    init=name in spec.init,
                    has_default=name in spec.defaults,
                    optional=_is_optional(tp),
                    exact=tp if tp in (int, str, bool, float) else _Never,
                )
            )
        names = [field.name for field in fields]
        build, what = spec.build, conv.what

        def from_map(values: dict[Any, Any]) -> Any:
            """The reference decoding path: defaults, missing fields and error paths."""
            kwargs: dict[str, Any] = {}
            for field in fields:
                item = values.get(field.name, _MISSING)
                if item is _MISSING:
                    if not field.has_default:
                        if not field.optional:  # a missing Optional field is None, as in serde
                            raise Mismatch(
                                f"missing required field {field.name!r} of {cls.__qualname__}"
                            )
                        if field.init:
                            kwargs[field.name] = None
                    continue
                if field.init:
                    try:
                        kwargs[field.name] = field.conv.dec(item)
                    except Mismatch as exc:
                        raise exc.at(f".{field.name}") from None
            try:
                return build(kwargs)
            except Exception as exc:  # the class's own validation (pydantic, __post_init__)
                raise Mismatch(f"cannot construct {cls.__qualname__}: {_reason(exc)}") from None

        fast = _fast_decoder(spec, fields)

        def dec(v: Any) -> Any:
            cls_ = v.__class__
            if cls_ is dict:
                if fast is not None:
                    try:
                        return fast(v)
                    except Exception:  # the reference path below says what is wrong
                        pass
                return from_map(v)
            if cls_ is list or cls_ is tuple:
                if len(v) > len(names):
                    raise expected(f"{what} with at most {len(names)} items", v)
                return from_map(dict(zip(names, v, strict=False)))
            raise expected(what, v)

        conv.dec = dec
        conv.enc = _encoder(spec, fields, self.plain)


class _Never:
    """A class no decoded value has: fields of other types always go through their decoder."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    conv: Converter
    init: bool
    has_default: bool
    optional: bool
    exact: type
    """Decoded values of exactly this class are taken as they are."""


def _is_name(name: str) -> bool:
    """Whether `name` can be written as is in generated code (attribute, keyword argument)."""
    return name.isidentifier() and not keyword.iskeyword(name)


def _function(source: str, namespace: dict[str, Any]) -> Fn:
    """Compile a generated function `f` (struct fast paths, as `dataclasses` itself does)."""
    exec(source, namespace)
    function: Fn = namespace["f"]
    return function


def _fast_decoder(spec: _StructSpec, fields: list[_Field]) -> Fn | None:
    """A generated decoder for a map holding every field; it raises on anything else."""
    fields = [field for field in fields if field.init]
    if not all(_is_name(field.name) for field in fields):
        return None
    namespace: dict[str, Any] = {"build": spec.build, "cls": spec.cls}
    items = []
    for i, field in enumerate(fields):
        namespace.update({f"n{i}": field.name, f"t{i}": field.exact, f"d{i}": field.conv.dec})
        items.append((field.name, f"(x if (x := m[n{i}]).__class__ is t{i} else d{i}(x))"))
    if spec.keywords:
        call = "cls(" + ", ".join(f"{name}={expr}" for name, expr in items) + ")"
    else:
        call = "build({" + ", ".join(f"n{i}: {expr}" for i, (_, expr) in enumerate(items)) + "})"
    return _function(f"def f(m):\n    return {call}\n", namespace)


def _encoder(spec: _StructSpec, fields: list[_Field], plain: Fn) -> Fn:
    """A generated encoder: a map keyed by field name in declaration order (NamedTuple: array)."""
    namespace: dict[str, Any] = {"S": SCALARS, "plain": plain, "cls": spec.cls}
    items = []
    for i, field in enumerate(fields):
        namespace.update({f"n{i}": field.name, f"e{i}": field.conv.enc, f"g{i}": field.name})
        get = f"v.{field.name}" if _is_name(field.name) else f"getattr(v, g{i})"
        if field.conv.enc is plain:  # inline the common case of a scalar value
            items.append((f"n{i}", f"(x if (x := {get}).__class__ in S else e{i}(x))"))
        else:
            items.append((f"n{i}", f"e{i}({get})"))
    if spec.as_array:
        body = (
            "    if v.__class__ is not cls:\n        return plain(v)\n"
            "    return [" + ", ".join(expr for _, expr in items) + "]\n"
        )
    else:
        body = "    return {" + ", ".join(f"{key}: {expr}" for key, expr in items) + "}\n"
    return _function("def f(v):\n" + body, namespace)


def _reason(exc: Exception) -> str:
    """An exception as one line; pydantic's ValidationError as `field: message; ...`."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            return "; ".join(
                ".".join(str(part) for part in error["loc"]) + f": {error['msg']}"
                for error in errors()
            )
        except Exception:  # not pydantic's: fall back to the text
            pass
    return " ".join(str(exc).split()) or exc.__class__.__name__


def _enum_name(member: Any) -> Any:
    return member.name


def _key_segment(key: Any) -> str:
    """`.name` for an identifier-like str key, else `[key]`."""
    return f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"


def _int_key(v: Any) -> int:
    """A JSON object key that stands for an int map key."""
    if v.__class__ is str:
        try:
            return int(v)
        except ValueError:
            pass
    raise expected("int (map key as a decimal string)", v)


def _freeze(value: Any) -> Any:
    """A plain value made hashable so it can be a msgpack map key."""
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        raise CodecError("a map cannot be a map key")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class _StructSpec:
    """Field names/types in declaration order, which ones have defaults, and how to build one."""

    cls: type
    types: dict[str, Any]
    defaults: frozenset[str]
    init: frozenset[str]
    build: Callable[[dict[str, Any]], Any]
    keywords: bool = True
    """The class is called with the fields as keyword arguments (else `build` takes a dict)."""
    as_array: bool = False

    @staticmethod
    def of(cls: type) -> _StructSpec:
        if dataclasses.is_dataclass(cls):
            hints = _hints(cls)
            fields = dataclasses.fields(cls)
            return _StructSpec(
                cls=cls,
                types={f.name: hints.get(f.name, Any) for f in fields},
                defaults=frozenset(
                    f.name
                    for f in fields
                    if f.default is not dataclasses.MISSING
                    or f.default_factory is not dataclasses.MISSING
                ),
                init=frozenset(f.name for f in fields if f.init),
                build=lambda kwargs: cls(**kwargs),
            )
        if _is_model(cls):
            model_fields = cls.model_fields  # type: ignore[attr-defined]
            aliased = any(f.alias or f.validation_alias for f in model_fields.values())
            validate = cls.model_validate  # type: ignore[attr-defined]
            return _StructSpec(
                cls=cls,
                types={name: f.annotation for name, f in model_fields.items()},
                defaults=frozenset(n for n, f in model_fields.items() if not f.is_required()),
                init=frozenset(model_fields),
                build=(lambda kw: validate(kw, by_name=True, by_alias=False))
                if aliased
                else validate,
                keywords=False,
            )
        hints = _hints(cls)  # a NamedTuple: written as an array, like upstream tuples
        names: tuple[str, ...] = cls._fields  # type: ignore[attr-defined]
        return _StructSpec(
            cls=cls,
            types={name: hints.get(name, Any) for name in names},
            defaults=frozenset(cls._field_defaults),  # type: ignore[attr-defined]
            init=frozenset(names),
            build=lambda kwargs: cls(**kwargs),
            as_array=True,
        )


def _hints(cls: type) -> dict[str, Any]:
    try:
        return get_type_hints(cls)
    except Exception as exc:
        raise CodecError(f"cannot resolve the field types of {cls.__qualname__}: {exc}") from exc


MSGPACK_SCALA = Format(
    "msgpack/scala",
    bytes_form="signed",
    wrap_options=True,
    prefer_wrapped=True,
    accept_wrapped=True,
    str_keys=False,
)
MSGPACK_RUST = Format(
    "msgpack/rust",
    bytes_form="unsigned",
    wrap_options=False,
    prefer_wrapped=False,
    accept_wrapped=True,
    str_keys=False,
)
JSON = Format(
    "json",
    bytes_form="base64",
    wrap_options=False,
    prefer_wrapped=False,
    accept_wrapped=False,
    str_keys=True,
)
