"""benchmarks/gpu_check.py at its tiny size on the CPU: the GPU check runs end to end and reports every number."""

from __future__ import annotations

import json

import pytest

from helpers import load_benchmark


def test_gpu_check_tiny_on_cpu_reports_every_stage(tmp_path):
    pytest.importorskip("transformers", reason="the [hf] extra (transformers) is not installed")
    out = tmp_path / "gpu_check.json"
    res = load_benchmark("gpu_check").main(["--tiny", "--device", "cpu", "--out", str(out)])
    ie, nb, tac = res["image_embedding"], res["noun_bank"], res["tac"]
    assert ie["images"] == 32 and ie["bare_forward_images_per_s"] > 0 and ie["whole_path_images_per_s"] > 0
    assert nb["prompts"] == nb["nouns"] * 7 > 0 and nb["full_vocabulary_projected_s"] > 0
    assert tac["n"] == 3000 and tac["k"] == 10 and tac["clusters_found"] >= 2 and tac["fit_s"] > 0
    assert tac["stages_s"] and tac["peak_gpu_memory_gib"] is None  # no GPU: no memory number
    assert json.loads(out.read_text())["table"].startswith("| measure | value |")
