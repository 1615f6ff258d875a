# Writes tests/data/mfhartmann_reference.json with the real package (run in its own venv: it pins numpy<2):
#   python -m venv /tmp/mfvenv && /tmp/mfvenv/bin/pip install mf-prior-bench==1.10.0
#   /tmp/mfvenv/bin/python tests/data/mfhartmann_reference.py > values.json   (then wrap as the JSON file shows)
import json

import mfpbench
import numpy as np

out = {}
for dims in (3, 6):
    for variant, cls in (("good", f"mfh{dims}_good"), ("terrible", f"mfh{dims}_terrible")):
        b = mfpbench.get(cls, seed=1)
        rng = np.random.default_rng(0)
        rows = []
        for x in rng.random((5, dims)):
            for z in (1, 10, 50, 100):
                cfg = {f"X_{i}": float(v) for i, v in enumerate(x)}
                r = b.query(cfg, at=z)
                rows.append([list(map(float, x)), z, float(r.error if hasattr(r, "error") else r.value)])
        out[f"{dims}-{variant}"] = rows
print(json.dumps(out))
