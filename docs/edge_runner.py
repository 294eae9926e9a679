"""Generate text from a kerasgen export (`kerasgen export --format tflite` or `onnx`) with
nothing of kerasgen: NumPy, the JSON files beside the model, and the model's runtime
(LiteRT's `ai-edge-litert`, else TensorFlow's interpreter; or `onnxruntime`).
Character-level runs (the vocabulary is the list `chars`).

    python edge_runner.py EXPORT_DIR --prime "KING" -n 200            # draws, seed 0
    python edge_runner.py EXPORT_DIR --prime "KING" -n 200 --greedy   # the most likely

It prints what `kerasgen sample` prints for the run with the same --seed and --temperature
(and with --greedy, what `kerasgen sample --sample 0` prints): each draw uses kerasgen's
uniform for (seed, token index), a 32-bit integer hash, through the cumulative softmax.
"""

import argparse
import json
import os

import numpy as np


def load_step(folder, info):
    """The model's step: (ids, state) -> (logits, new state), state by input name."""
    path = os.path.join(folder, info["model"])
    if info["format"] == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        outputs = ["logits"] + [s["output"] for s in info["state"]]
        names = [s["name"] for s in info["state"]]

        def step(ids, state):
            logits, *new = session.run(outputs, {"ids": ids, **state})
            return logits, dict(zip(names, new))

        return step
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tensorflow.lite import Interpreter
    runner = Interpreter(model_path=path).get_signature_runner("step")

    def step(ids, state):
        out = runner(ids=ids, **state)
        return out.pop("logits"), out  # TFLite's new state keeps the inputs' names

    return step


MASK = 0xFFFFFFFF


def mix(x):
    """A 32-bit integer hash (lowbias32)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK
    return x ^ (x >> 16)


def uniform(seed, g):
    """kerasgen's uniform in (0, 1) for generated token g of a sample with this seed."""
    key = mix((mix(seed & MASK) + g) & MASK)
    h = mix(key)  # mix(key + r) for sample r of several; this is sample 0
    return (np.float32(h >> 8) + np.float32(0.5)) / np.float32(1 << 24)


def generate(folder, prime, n, temperature=1.0, seed=0, greedy=False):
    with open(os.path.join(folder, "export.json"), encoding="utf-8") as f:
        info = json.load(f)
    with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
        chars = json.load(f)["chars"]
    index = {c: i for i, c in enumerate(chars)}
    step = load_step(folder, info)
    # One row that has read nothing (a shape's None is the batch: any number of rows).
    state = {s["name"]: np.zeros([1, *s["shape"][1:]], s["dtype"]) for s in info["state"]}
    # The run's preamble, then the prime (with neither: id 0, the most frequent char).
    prefix = [index[c] for c in info["preamble"] + prime] or [0]
    for i in prefix:
        logits, state = step(np.array([i], np.int32), state)
    out = []
    for g in range(n):
        z = logits[0].astype(np.float32)
        if greedy:
            i = int(np.argmax(z))
        else:  # the float32 cumulative softmax at the temperature, and one uniform
            z = (z - z.max()) / np.float32(temperature)
            e = np.exp(z)
            cdf = np.cumsum(e / e.sum(), dtype=np.float32)
            i = int(min(np.sum(cdf < uniform(seed, g) * cdf[-1]), len(chars) - 1))
        out.append(chars[i])
        logits, state = step(np.array([i], np.int32), state)
    return prime + "".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--prime", default="")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--greedy", action="store_true")
    a = parser.parse_args()
    print(generate(a.folder, a.prime, a.n, a.temperature, a.seed, a.greedy))
