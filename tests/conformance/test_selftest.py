"""The conformance suite is itself tested: it passes vfs and fails deliberately broken drivers."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import pytest

from layerstore.conformance.suite._xattrs import XATTR_SIZES

pytest_plugins = ["pytester"]

BROKEN = Path(__file__).with_name("broken_drivers.py")

# The only skips allowed on vfs: capabilities it does not declare.
VFS_SKIPS = {
    "requires quota: driver 'vfs' does not declare capability 'quota'",
    "requires read-only-layers: driver 'vfs' does not declare capability 'read-only-layers'",
    "requires native-diff: driver 'vfs' does not declare capability 'native-diff'",
    "requires max-depth: driver 'vfs' declares no maximum depth",
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
    """Everything but the crash tests (those run on a loop filesystem in the vfs environment)."""
    _suite_class(pytester, "vfs")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "-k", "not killed")
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


def test_leftover_layer_is_reported_as_a_leftover_not_an_escape(pytester: pytest.Pytester) -> None:
    _suite_class(pytester, "RemoveLeavesFilesDriver")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "unsafe and base-truncated]")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*files of layer * are left under the driver home*a leftover, not an escape*"])
    errors = [line for line in result.outlines if line.startswith("E ")]
    assert not any("wrote outside the layer" in line for line in errors), errors


def test_misspelt_capability_is_an_error(pytester: pytest.Pytester) -> None:
    _suite_class(
        pytester,
        "vfs",
        "    @pytest.mark.layerstore_requires('native_dif')\n    def test_mine(self, driver):\n        pass\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "test_mine")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown requirement 'native_dif'; known requirements:*native-diff*"])


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
    assert _skip_reasons(result) == ["requires quota: driver 'vfs' does not declare capability 'quota'"]


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
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*driver vfs is required here*needs root: the suite is not running as root*"])
    else:
        result.assert_outcomes(skipped=1)
        assert _skip_reasons(result) == [
            "needs root: the suite is not running as root (device nodes, foreign owners, trusted.* xattrs)"
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
    result.stdout.fnmatch_lines(["@pytest.mark.layerstore_requires(*requirements)*"])
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(
        ["*--layerstore-driver=NAME*", "*--layerstore-root=DIR*", "*--layerstore-option=KEY=VALUE*"]
    )


def test_command_line_options_reach_the_driver(pytester: pytest.Pytester) -> None:
    """A misconfigured driver stops the certification before any test, with the one reason."""
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--pyargs", "layerstore.conformance",
        "--layerstore-driver", "vfs", "--layerstore-option", "copy=bogus", "-k", "empty",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*not certified: bad value 'bogus' for vfs option 'copy'*"])
    assert "passed" not in result.stdout.str() and "error" not in result.stdout.str().lower().replace("errors", "")


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


@pytest.mark.parametrize(
    ("driver", "test", "message"),
    [
        pytest.param(
            "BuildsInPlaceDriver",
            "test_killed_create_leaves_child_whole_or_absent",
            "*left layer * existing but incomplete (* of 20000 files*build a layer under a private name*",
            id="builds-in-place",
        ),
        pytest.param(
            "LeaksStagingDriver",
            "test_killed_create_leaves_child_whole_or_absent",
            "*gc left *staging* in the driver home*",
            id="gc-leaves-staging",
        ),
    ],
)
def test_crash_tests_catch_unsafe_drivers(
    pytester: pytest.Pytester, ext4_root: Path, driver: str, test: str, message: str
) -> None:
    _suite_class(pytester, driver)
    root = Path(tempfile.mkdtemp(dir=ext4_root))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--layerstore-root", str(root), "-k", test)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])


def test_vfs_passes_the_crash_tests(pytester: pytest.Pytester, ext4_root: Path) -> None:
    _suite_class(pytester, "vfs")
    root = Path(tempfile.mkdtemp(dir=ext4_root))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--layerstore-root", str(root), "-k", "killed")
    result.assert_outcomes(passed=3)


def _certify(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.run(Path(sys.executable).with_name("layerstore"), "conformance", *args)


def test_certification_verdict_and_report(pytester: pytest.Pytester, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = _certify(pytester, "vfs", "--report", str(report), "--", "-p", "no:cacheprovider",
                      "-k", "empty or quota or max_depth or depth_limit")  # fmt: skip
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert result.outlines[-1] == "certified: 1 passed, 2 skipped for declared capabilities"
    result.stdout.fnmatch_lines(
        [
            "*layerstore: skipped tests and why*",
            "*1 skipped: requires max-depth: driver 'vfs' declares no maximum depth",
            "*1 skipped: requires quota: driver 'vfs' does not declare capability 'quota'",
        ]
    )
    data = json.loads(report.read_text())
    assert data["driver"] == "vfs" and data["distribution"] == "layerstore-vfs" and data["version"]
    assert data["certified"] is True and data["capabilities"]["idmap"] is True
    assert data["capabilities"]["max_depth"] is None
    outcomes = {t["id"].rpartition("::")[2]: (t["outcome"], t["reason"]) for t in data["tests"]}
    assert outcomes["test_empty_base_layer"] == ("passed", None)
    assert outcomes["test_quota"] == ("skipped", "requires quota: driver 'vfs' does not declare capability 'quota'")


def test_certification_fails_for_environment_skips(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Skips that are not the driver's declared capabilities (here: no root) leave it not certified."""
    pytester.makepyfile(fake_user="import os\nos.geteuid = lambda: 1000  # the suite believes it is not root\n")
    monkeypatch.delenv("LAYERSTORE_REQUIRE_DRIVERS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--pyargs", "layerstore.conformance", "--layerstore-driver", "vfs",
        "-p", "fake_user", "-k", "empty or diff_of_base",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.outlines[-1] == (
        "not certified: 1 skipped for reasons other than declared capabilities, "
        "1 passed, 0 skipped for declared capabilities"
    )


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--option", "copy=bogus"], "bad value 'bogus' for vfs option 'copy'; choose one of:"),
        (["--option", "copy=reflink"], "cannot clone files (FICLONE)"),
        (["--option", "colour=blue"], "unknown option 'colour' for driver vfs; known options: copy"),
    ],
    ids=["bad-value", "not-supported", "unknown-option"],
)
def test_driver_that_cannot_open_is_not_certified(
    pytester: pytest.Pytester, tmp_path: Path, args: list[str], reason: str
) -> None:
    report = tmp_path / "report.json"
    result = _certify(pytester, "vfs", "--root", str(tmp_path / "root"), "--report", str(report), *args)
    assert result.ret == 1
    assert result.outlines == [], "the suite ran although the driver cannot be opened"
    assert len(result.errlines) == 1 and reason in result.errlines[0], result.errlines
    data = json.loads(report.read_text())
    assert data["certified"] is False and reason in data["not_opened"] and data["tests"] == []


def test_third_party_requirements_subclass(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subclass answers for its backend and adds requirements of its own; every skip says why."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("LAYERSTORE_REQUIRE_DRIVERS", raising=False)
    pytester.makepyfile(
        test_mine=(
            "import pytest\n"
            "from layerstore.conformance import DriverConformance\n"
            "from layerstore.conformance.requirements import Requirement, Requirements\n"
            "class Mine(Requirements):\n"
            "    @property\n"
            "    def quota(self):\n"
            "        return Requirement('quota', True)\n"
            "    @property\n"
            "    def fast_network(self):\n"
            "        return Requirement.unless(False, 'fast-network', 'the lab network is slow today')\n"
            "class TestMine(DriverConformance):\n"
            "    driver_name = 'vfs'\n"
            "    requirements = Mine\n"
            "    @pytest.mark.layerstore_requires('fast-network')\n"
            "    def test_network(self, driver):\n"
            "        raise AssertionError('must not run')\n"
            "    @pytest.mark.layerstore_requires('quota')\n"
            "    def test_quota_claimed(self, driver):\n"
            "        pass\n"
            "class Down(Requirements):\n"
            "    @property\n"
            "    def backend(self):\n"
            "        return Requirement('backend', False, 'the pool is offline', strict=True)\n"
            "class TestDown(DriverConformance):\n"
            "    driver_name = 'vfs'\n"
            "    requirements = Down\n"
        )
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "-k", "TestMine and (network or quota_claimed) or TestDown and empty_base"
    )
    result.assert_outcomes(passed=1, skipped=2)
    assert sorted(_skip_reasons(result)) == [
        "needs backend: the pool is offline",
        "requires fast-network: the lab network is slow today",
    ]


@pytest.mark.parametrize(
    ("driver", "test", "message"),
    [
        ("IgnoresParentDriver", "test_child_is_exact_copy_of_parent", "*missing plain*"),
        ("FollowsSymlinksDriver", "test_child_is_exact_copy_of_parent", "*link-rel: kind: 'symlink' != 'file'*"),
        ("LosesOwnersDriver", "test_child_is_exact_copy_of_parent", "*owned: uid: 1234 != 0; gid: 5678 != 0*"),
        ("LosesTimesDriver", "test_child_is_exact_copy_of_parent", "*plain: mtime_ns: *"),
        ("LosesHardlinksDriver", "test_child_is_exact_copy_of_parent", "*hard-a: links: ('hard-a', *) != ()*"),
        ("LosesSpecialFilesDriver", "test_child_is_exact_copy_of_parent", "*missing fifo*"),
        ("RemoveKeepsLayerDriver", "test_parent_of_a_child_cannot_be_removed", "*layers still exist*"),
        ("GetNotIdempotentDriver", "test_get_is_idempotent_and_counted", "*a second get returned another path*"),
    ],
    ids=lambda value: value if value.endswith("Driver") else "",
)
def test_suite_catches_planted_bug_with_a_message_that_points_at_it(
    pytester: pytest.Pytester, driver: str, test: str, message: str
) -> None:
    _suite_class(pytester, driver)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", test)
    assert test in _failed(result), result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines([message])


def test_misconfigured_subclass_fails_once_not_once_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mine=(
            "from layerstore.conformance import DriverConformance\n"
            "class TestMine(DriverConformance):\n"
            "    driver_name = 'vfs'\n"
            "    driver_options = {'colour': 'blue'}\n"
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "-k", "empty or missing or status")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 1, result.stdout.str()
    assert 1 <= result.stdout.str().count("unknown option 'colour' for driver vfs") <= 2  # the error (+ summary line)
    assert outcomes["skipped"] >= 2
    assert set(_skip_reasons(result)) == {"needs backend: driver 'vfs' cannot be opened (see the first failure)"}
