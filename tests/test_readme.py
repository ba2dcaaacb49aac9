"""The README's quickstart runs as written and gets what it claims."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_from_onnx_to_prediction(tmp_path, monkeypatch, capsys):
    block = re.search(r"## Quickstart.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) == 5
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md quickstart", "exec"), {})
    snn, ann = map(float, capsys.readouterr().out.split())
    assert snn >= ann - 0.02 and (tmp_path / "digits.nvm").exists()
