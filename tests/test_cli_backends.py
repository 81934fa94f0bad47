"""`fdlayers demo` on the Keras backend of the run: float64 on every one.

Kept apart from test_cli.py so that test_backends.py runs it on JAX and
PyTorch too, in the processes that have loaded those backends already
(once `'ArrayImpl' object has no attribute 'numpy'` on JAX).
"""

import re

import keras

from fdlayers import cli


def test_demo_is_float64_on_this_backend(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--steps", "16", "--no-plot"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"({keras.backend.backend()} backend)" in out and "[3.]" in out
    # t^5 where order + accuracy > 5: exact up to float64 rounding (float32
    # would leave errors near 1e-2 on values up to 5e3).
    exact = re.findall(r"^\s+t\^5\s+\d\s+\d\s+\w+\s+(\S+).*exact$", out, flags=re.M)
    assert len(exact) >= 3 and max(map(float, exact)) < 1e-6, out
