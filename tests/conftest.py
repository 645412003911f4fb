"""Shared test helpers get pytest's assertion rewriting (detailed failure messages) too: they
are registered here, before any test module imports them."""

import pytest

pytest.register_assert_rewrite(
    "tests.dockerutil", "tests.waiting", "tests.cluster", "tests.kvbackends", "tests.apiserver_fixture"
)
