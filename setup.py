from setuptools import setup

with open("kerasgen/__init__.py", encoding="utf-8") as f:
    version = next(line.split('"')[1] for line in f if line.startswith("__version__"))

# 1.17: converts TensorFlow 2.16 and later with numpy 2; the runtime since 1.20 runs opset 17.
ONNX = ["tf2onnx>=1.17,<2", "onnx>=1.17,<2", "onnxruntime>=1.20,<2"]
LITERT = ["ai-edge-litert>=1.2,<3"]

setup(
    name="kerasgen",
    version=version,
    description=(
        "Character-level text generation with stateful Keras RNNs (char-rnn on TF2/Keras 3)"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The Click layer lives in cli/ but installs as kerasgen_cli, so no
    # top-level package called "cli" lands in site-packages.
    packages=["kerasgen", "kerasgen_cli"],
    package_dir={"kerasgen_cli": "cli"},
    # The shipped presets (kerasgen train --preset NAME), the page kerasgen serve
    # shows at / (kerasgen/page/) and Python's grammar (python.lark), read with
    # importlib.resources.
    package_data={"kerasgen": ["presets/*.json", "page/*", "python.lark"]},
    # Every dependency bounded below the next major version, which may break the API.
    install_requires=[
        "tensorflow>=2.16,<3",
        "keras>=3.8,<4",  # 3.8: mixed precision trains (below, a float16 variable error)
        "numpy>=1.26,<3",
        "tensorboard>=2.16.2,<3",  # 2.16.0 pulls in tf-nightly, 2.16.1 Keras 2
        "click>=8.2,<9",  # 8.2: CliRunner keeps stderr apart (the tests read it)
        "h5py>=3.10,<4",
        # --level bpe. 0.20 reads the merges as today's releases write them
        # (token pairs; 0.15 cannot), so a run folder's vocab.json loads with
        # any version in the range.
        "tokenizers>=0.20,<1",
        # --constrain python: the LALR table of kerasgen/python.lark.
        "lark>=1.1,<2",
        # kerasgen serve: the ASGI app and its server.
        "starlette>=0.40,<2",
        "uvicorn>=0.30,<1",
    ],
    # onnx: kerasgen export --format onnx (the converter, and the runtime that runs and
    # quantizes the file); litert: LiteRT's interpreter for TFLite files (TensorFlow's
    # own runs them too). test: httpx, Starlette's test client; openai, the client the
    # server is tested with; selenium, which drives Debian's chromium through its
    # chromedriver for the page's test; both export runtimes; and the linter and
    # formatter .ci/run runs, held to one minor series (its output changes).
    extras_require={
        "onnx": ONNX,
        "litert": LITERT,
        "test": [
            "pytest>=7,<10",
            "httpx>=0.27,<1",
            "openai>=1.40,<4",
            "selenium>=4.20,<5",
            "ruff>=0.17,<0.18",
            *ONNX,
            *LITERT,
        ],
    },
    entry_points={"console_scripts": ["kerasgen=kerasgen_cli.main:run"]},
)
