"""The quick lane's rule (tests/conftest.py): a test not marked slow cannot start a process."""

import subprocess

import pytest

CALLS = [
    lambda: subprocess.Popen(["true"]),
    lambda: subprocess.run(args=["true"]),  # the argument by keyword, as some libraries pass it
]


@pytest.mark.parametrize("call", CALLS)
def test_an_unmarked_test_cannot_start_a_process(call) -> None:
    with pytest.raises(AssertionError, match="mark it slow"):
        call()
