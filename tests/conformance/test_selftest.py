"""The conformance suite is itself tested: it passes vfs and fails deliberately broken drivers."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from layerstore.conformance.suite._xattrs import XATTR_SIZES

pytest_plugins = ["pytester"]

BROKEN = Path(__file__).with_name("broken_drivers.py")

# The only skips allowed on vfs: capabilities it does not declare.
VFS_SKIPS = {
    "driver 'vfs' does not declare capability 'quota'",
    "driver 'vfs' does not declare capability 'read-only-layers'",
    "driver 'vfs' does not declare capability 'native-diff'",
    "driver 'vfs' declares no maximum depth",
}


_IMPORTS = "from layerstore.conformance import DriverConformance\nfrom broken_drivers import *\n"


def _suite_class(pytester: pytest.Pytester, driver: str, methods: str = "") -> None:
    """A test module with one DriverConformance subclass for `driver`: "vfs" or a class of broken_drivers."""
    if driver == "vfs":
        header = "class TestVfs(DriverConformance):\n    driver_name = 'vfs'\n"
    else:
        header = f"class TestBroken(DriverConformance):\n    driver_name = 'broken'\n    driver_factory = {driver}\n"
    pytester.makepyfile(broken_drivers=BROKEN.read_text())
    pytester.syspathinsert()
    pytester.makepyfile(test_suite=f"import pytest\n{_IMPORTS}\n{header}" + ("\n" + methods if methods else ""))


def _skip_reasons(result: pytest.RunResult) -> list[str]:
    reasons = []
    for line in result.outlines:
        match = re.match(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", line)
        if match:
            reasons.append(match.group(1))
    return reasons


def _failed(result: pytest.RunResult) -> set[str]:
    return {m.group(1) for line in result.outlines if (m := re.match(r"FAILED \S+::(test_\w+)", line))}


def test_vfs_passes_the_whole_suite(pytester: pytest.Pytester) -> None:
    _suite_class(pytester, "vfs")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 40
    # The root here is on the machine's ext4, which holds xattr values of one block only.
    too_big = [r for r in _skip_reasons(result) if re.search(r"cannot hold a \d+-byte user xattr", r)]
    assert set(_skip_reasons(result)) - set(too_big) <= VFS_SKIPS, _skip_reasons(result)
    assert outcomes.get("skipped", 0) <= len(VFS_SKIPS) + len(XATTR_SIZES)


@pytest.mark.parametrize(
    ("driver", "selection", "must_fail"),
    [
        pytest.param(
            "LosesXattrsDriver",
            "copy or grandchild",
            {"test_child_is_exact_copy_of_parent", "test_grandchild_is_copy_of_changed_child"},
            id="child-not-a-copy",
        ),
        pytest.param(
            "DropsWhiteoutsDriver",
            "diff or whiteout",
            {
                "test_whiteouts_across_three_layers",
                "test_diff_of_child_layer",
                "test_diff_applies_with_plain_archive_code",
            },
            id="diff-without-whiteouts",
        ),
        pytest.param(
            "ViewPerGetDriver",
            "across_processes",
            {"test_get_put_across_processes"},
            id="get-breaks-second-holder",
        ),
        pytest.param(
            "ExtractsAnywhereDriver",
            "unsafe",
            {"test_unsafe_tar_is_refused"},
            id="extracts-outside",
        ),
    ],
)
def test_suite_fails_broken_driver(pytester: pytest.Pytester, driver: str, selection: str, must_fail: set[str]) -> None:
    _suite_class(pytester, driver)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", selection)
    failed = _failed(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert must_fail <= failed, f"expected failures {sorted(must_fail)}, got {sorted(failed)}\n{result.stdout.str()}"


def test_unsafe_tars_escape_with_the_broken_driver_but_not_with_vfs(pytester: pytest.Pytester) -> None:
    """The failures of ExtractsAnywhereDriver are real escapes, not a missing exception only."""
    _suite_class(pytester, "ExtractsAnywhereDriver")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "unsafe and base-dot-dot]")
    result.stdout.fnmatch_lines(["*the tar wrote outside the layer*"])


def test_misspelt_capability_is_an_error(pytester: pytest.Pytester) -> None:
    _suite_class(
        pytester,
        "vfs",
        "    @pytest.mark.layerstore_requires('native_dif')\n    def test_mine(self, driver):\n        pass\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "test_mine")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown driver capability 'native_dif'*known capabilities*native-diff*"])


def test_marker_skips_with_reason_naming_capability_and_driver(pytester: pytest.Pytester) -> None:
    _suite_class(
        pytester,
        "vfs",
        "    @pytest.mark.layerstore_requires('idmap', 'quota')\n"
        "    def test_mine(self, driver):\n"
        "        raise AssertionError('must not run')\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "-k", "test_mine")
    result.assert_outcomes(skipped=1)
    assert _skip_reasons(result) == ["driver 'vfs' does not declare capability 'quota'"]


@pytest.mark.parametrize("ci", [False, True], ids=["dev-machine", "ci"])
def test_root_only_tests_skip_on_a_dev_machine_and_fail_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: bool
) -> None:
    _suite_class(pytester, "vfs")
    pytester.makeconftest("import os\nos.geteuid = lambda: 1000  # the suite believes it is not root\n")
    monkeypatch.delenv("LAYERSTORE_REQUIRE_DRIVERS", raising=False)
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "-k", "test_diff_of_base_layer")
    if ci:
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*driver vfs is required here*this test needs root*"])
    else:
        result.assert_outcomes(skipped=1)
        assert _skip_reasons(result) == [
            "driver vfs cannot run here: this test needs root "
            "(the tar has device nodes, foreign owners and trusted.* xattrs)"
        ]


def test_known_bug_as_strict_xfail(pytester: pytest.Pytester) -> None:
    _suite_class(
        pytester,
        "LosesXattrsDriver",
        "    @pytest.mark.xfail(strict=True, reason='drops xattrs, issue 1')\n"
        "    def test_child_is_exact_copy_of_parent(self, driver):\n"
        "        super().test_child_is_exact_copy_of_parent(driver)\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "test_child_is_exact_copy_of_parent")
    result.assert_outcomes(xfailed=1)


def test_pyargs_without_driver_says_what_to_do(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "--pyargs", "layerstore.conformance", "-k", "empty"
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no driver selected: run*--layerstore-driver NAME*installed drivers:*vfs*"])


def test_plugin_registers_options_and_marker(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.layerstore_requires(*capabilities)*"])
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(
        ["*--layerstore-driver=NAME*", "*--layerstore-root=DIR*", "*--layerstore-option=KEY=VALUE*"]
    )


def test_command_line_options_reach_the_driver(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--pyargs", "layerstore.conformance",
        "--layerstore-driver", "vfs", "--layerstore-option", "copy=bogus", "-k", "empty",
    )  # fmt: skip
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*bad value 'bogus' for vfs option 'copy'*"])


def test_run_suite_returns_exit_code(pytester: pytest.Pytester, tmp_path: Path) -> None:
    root = tmp_path / "root"
    code = (
        "import sys\n"
        "from layerstore.conformance import run_suite\n"
        f"sys.exit(run_suite('vfs', root={str(root)!r}, options={{'copy': 'read'}}, "
        "pytest_args=['-p', 'no:cacheprovider', '-k', 'child_is_exact_copy or base_layer_from_tar', '-q']))\n"
    )
    result = pytester.run(sys.executable, "-c", code)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*2 passed*"])
    assert root.is_dir() and list(root.iterdir()) == [], "the suite left driver homes behind"
