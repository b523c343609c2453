import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_xor_example(capsys):
    runpy.run_path(str(EXAMPLES / "xor.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("no hidden layer:       accuracy 0.75")
    assert lines[1].startswith("one hidden layer of 8: accuracy 1.00")
