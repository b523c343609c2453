import re
import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_xor_example(capsys):
    runpy.run_path(str(EXAMPLES / "xor.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    linear = float(re.search(r"accuracy (\d\.\d\d)", lines[0]).group(1))
    hidden = float(re.search(r"accuracy (\d\.\d\d)", lines[1]).group(1))
    assert lines[0].startswith("no hidden layer:") and linear <= 0.75
    assert lines[1].startswith("one hidden layer of 8:") and hidden == 1.0
