"""ANN -> SNN conversion on scikit-learn's digits: accuracy of the ANN, of the converted SNN on
the golden emulator and on the Verilator model of the HDL, and accuracy versus timesteps.

    .venv/bin/python benchmarks/digits_accuracy.py      # writes docs/accuracy.md and docs/digits_accuracy.png

The whole test split (360 images) is used at every point.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurovm.examples import digits_onnx  # noqa: E402
from neurovm.host.model import convert_onnx  # noqa: E402

STEPS = (2, 4, 8, 16, 32, 64)


#: where benchmarks/import_accuracy.py's section of docs/accuracy.md starts
IMPORT_MARKER = "<!-- import_accuracy.py:"


def main():
    t0 = time.perf_counter()
    onx, data, ann_acc = digits_onnx(hidden=(64,), seed=0)
    model = convert_onnx(onx, data.x_train[:500], steps=32)
    y = data.y_test
    rows = []
    for t in STEPS:
        t1 = time.perf_counter()
        pred = model.predict(data.x_test, backend="emulator", steps=t, progress=False)
        dt = time.perf_counter() - t1
        ref = model.predict_reference(data.x_test, steps=t)
        rows.append((t, float((pred == y).mean()), bool(np.array_equal(pred, ref)), dt))
        print(f"T={t:3d}: emulator {rows[-1][1] * 100:.2f} % ({dt:.1f} s), same as numpy reference: {rows[-1][2]}",
              flush=True)
    t1 = time.perf_counter()
    p_ver = model.predict(data.x_test, backend="verilator", steps=32, progress=False)
    t_ver = time.perf_counter() - t1
    p_emu = model.predict(data.x_test, backend="emulator", steps=32, progress=False)
    ver_acc = float((p_ver == y).mean())
    same = bool(np.array_equal(p_ver, p_emu))
    print(f"verilator T=32: {ver_acc * 100:.2f} % ({t_ver:.1f} s), identical to emulator: {same}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot([r[0] for r in rows], [100 * r[1] for r in rows], "o-", label="SNN on the chip (emulator)")
    ax.axhline(100 * ann_acc, color="k", ls="--", label="ANN (float)")
    ax.axhline(100 * ann_acc - 2, color="grey", ls=":", label="ANN - 2 pp")
    ax.set_xscale("log", base=2)
    ax.set_xticks(STEPS, [str(t) for t in STEPS])
    ax.set_xlabel("timesteps per image")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits 64-64-10: converted SNN vs ANN (360 test images)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "digits_accuracy.png")

    lines = [
        "# ANN -> SNN conversion accuracy (scikit-learn digits)",
        "",
        "Produced by `.venv/bin/python benchmarks/digits_accuracy.py` "
        f"(total {time.perf_counter() - t0:.0f} s on this machine).",
        "",
        "Model: scikit-learn `MLPClassifier(hidden_layer_sizes=(64,), activation='relu', random_state=0)` trained on",
        "1,437 images (x/16), exported as an ONNX `Gemm -> Relu -> Gemm` graph (`neurovm.examples.digits_onnx`),",
        "converted with `neurovm.convert_onnx(onnx, x_train[:500])` (99.9th-percentile normalisation, 8-bit",
        "weights), and run on the 360 held-out images. The converted network has 138 neurons and",
        f"{sum(int((w != 0).sum()) for w in model.weights):,} synapses and fits one core.",
        "",
        "| network | backend | timesteps | test accuracy | predictions |",
        "|---|---|---:|---:|---|",
        f"| ANN (float64) | numpy | - | {ann_acc * 100:.2f} % | |",
    ]
    for t, acc, same_ref, dt in rows:
        lines.append(f"| SNN (integer) | emulator | {t} | {acc * 100:.2f} % | "
                     f"{'identical to' if same_ref else 'DIFFER from'} the numpy layer-by-layer reference; {dt:.1f} s |")
    lines.append(f"| SNN (integer) | Verilator (HDL) | 32 | {ver_acc * 100:.2f} % | "
                 f"{'identical to' if same else 'DIFFER from'} the emulator's; {t_ver:.1f} s |")
    lines += [
        "",
        "![accuracy vs timesteps](digits_accuracy.png)",
        "",
        f"From {min(t for t, acc, _, _ in rows if acc >= ann_acc - 0.02)} timesteps on, the SNN is within 2 "
        "percentage points of the ANN (the test",
        "`tests/test_model.py` asserts it at 32 steps on the whole test split). Fewer steps cost accuracy",
        "because a rate code of T steps resolves an activation only to 1/T, and every layer adds one",
        "step of latency before its spikes reach the next.",
    ]
    doc = ROOT / "docs" / "accuracy.md"
    kept = ""   # the imported-models section below its marker belongs to benchmarks/import_accuracy.py
    if doc.exists() and IMPORT_MARKER in doc.read_text():
        kept = "\n" + doc.read_text()[doc.read_text().index(IMPORT_MARKER):]
    doc.write_text("\n".join(lines) + "\n" + kept)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
