"""tools/benchmark.py on a tiny DETR on the CPU (in this process)."""
import pytest
from conftest import DETECTRON2_MISSING

pytest.importorskip("detectron2", reason=DETECTRON2_MISSING)

from tool_helpers import QUICKSTART, TINY_DETR, datasets_root, load_tool  # noqa: E402


def test_benchmark_prints_positive_rates(tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setenv("SAM_DETR_DATASETS", str(datasets_root(tmp_path_factory)))
    load_tool("benchmark").main(
        ["--config-file", QUICKSTART, "--device", "cpu", "--iters", "2", "--warmup", "1", *TINY_DETR]
    )
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("train", "inference"):
            rows[cells[0], cells[1]] = cells[2:]
    assert set(rows) == {("train", "2"), ("inference", "1"), ("inference", "4")}, out
    for (task, batch), (iters_per_s, images_per_s, memory) in rows.items():
        assert float(iters_per_s) > 0
        # both are printed with 2 decimals
        assert float(images_per_s) == pytest.approx(int(batch) * float(iters_per_s), abs=0.005 * (int(batch) + 1))
        assert float(memory) >= 0
