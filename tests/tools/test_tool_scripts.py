"""Every tools/*.py starts as a script (`python tools/<tool>.py --help`: its imports and its command line), all
in one fresh process; the tools' tests call their `main` in the test's process."""
import subprocess
import sys

import pytest
from conftest import DETECTRON2_MISSING, REPO_ROOT

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from tool_helpers import tool_env  # noqa: E402

TOOLS = sorted(str(p) for p in (REPO_ROOT / "tools").glob("*.py"))

# runs each script as `python <script> --help` would (runpy's __main__), one after the other
HELP_EACH = """
import runpy, sys
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as done:
        if done.code not in (0, None):
            raise
    else:
        raise SystemExit(f"{path} --help did not exit")
    print(f"=== {path} done", flush=True)
"""


@pytest.mark.slow
def test_every_tool_prints_its_usage_as_a_script(tmp_path_factory):
    proc = subprocess.run([sys.executable, "-c", HELP_EACH, *TOOLS], env=tool_env(tmp_path_factory),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outputs = proc.stdout.split("=== ")
    for tool, output in zip(TOOLS, outputs):
        assert "usage:" in output, f"{tool}:\n{output}"
    assert [o.split(" done")[0] for o in outputs[1:]] == TOOLS
