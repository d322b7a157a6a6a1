import json

import numpy as np
import soundfile as sf

from bench.gate_report import main
from monitor.constants import SAMPLE_RATE

HEADER = "path,label,source,group,license,duration_s,sample_rate,orig_sr,origin\n"


def write_clip(path, samples, rate=SAMPLE_RATE):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype="PCM_16")


def cry_like(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    voiced = sum(np.sin(2 * np.pi * k * 450.0 * t) / k for k in range(1, 6))
    return (0.1 * voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 0.8 * t))).astype(np.float32)


def test_report_counts_windows_per_label_and_source(tmp_path, capsys):
    write_clip(tmp_path / "audio/cry.flac", cry_like(6.0, 8000), rate=8000)
    write_clip(tmp_path / "audio/quiet.flac", np.zeros(5 * SAMPLE_RATE, np.float32))
    (tmp_path / "manifest.csv").write_text(
        HEADER + "audio/cry.flac,cry,phone,g1,x,6,8000,8000,o\naudio/quiet.flac,normal,room,g2,x,5,16000,16000,o\n")
    assert main(["--manifest", str(tmp_path / "manifest.csv"), "--mode", "both"]) == 0
    report = json.loads(capsys.readouterr().out)
    for mode in ("clip", "stream"):
        result = report["modes"][mode]
        assert result["clips_read"] == 2
        assert result["by_label"]["Crying"]["windows"] > 0
        assert result["alert_energetic_windows"]["Crying"]["pass_fraction"] == 1.0
        assert result["by_source"]["room"]["pass_fraction"] == 0.0
        assert result["reasons_by_source"]["room"] == {"silence": result["by_source"]["room"]["windows"]}


def test_unknown_label_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "manifest.csv").write_text(HEADER + "a.flac,giggle,x,g,x,1,16000,16000,o\n")
    assert main(["--manifest", str(tmp_path / "manifest.csv")]) == 1
    [problem] = capsys.readouterr().err.splitlines()
    assert problem.startswith("gate_report: ") and "unknown label 'giggle'" in problem
