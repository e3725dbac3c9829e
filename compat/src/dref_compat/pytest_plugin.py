"""pytest plugin (entry point `pytest11`): rewrite asserts of the conformance suite."""

import pytest

pytest.register_assert_rewrite("dref_compat.conformance")
