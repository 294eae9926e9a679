"""``kerasgen bench``: training and sampling throughput of one model shape, measured.

Everything timed here is the code ``kerasgen train`` and ``kerasgen sample``
run: ``steps.compile_steps`` fed by ``data.StreamBatches`` with the loss read
back every step (as the training loop does), and ``sampling.Sampler``.
Each figure is the median over several timed windows after a warm-up that
includes compilation, because a shared machine is noisy.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np

from kerasgen import checks
from kerasgen.backward import PRECISIONS, resolve_precision
from kerasgen.errors import ParameterError
from kerasgen.model import DEFAULT_FAMILY, ModelConfig, family
from kerasgen.profile import gemm_peak, profile_training

WINDOWS = 5  # timed windows per measurement; the median is reported
PRIME_CHARS = 20_000  # the long prime whose reading is timed


@dataclass(frozen=True)
class BenchConfig:
    model: str = DEFAULT_FAMILY
    rnn_size: int = 128
    num_layers: int = 2
    vocab_size: int = 65  # tiny Shakespeare's
    batch_size: int = 50
    seq_length: int = 50
    input_keep_prob: float = 1.0
    output_keep_prob: float = 1.0
    seconds: float = 10.0  # per measurement: training, 1-stream and N-stream sampling
    sample_streams: int = 64
    fused: bool = True
    jit_compile: bool = False
    seed: int = 0
    profile: bool = False  # also time the parts of a training step (kerasgen.profile)
    precision: str = "auto"  # the training step's, as TrainConfig.precision

    def __post_init__(self):
        if not self.seconds > 0:
            raise ParameterError("seconds", f"must be > 0, got {self.seconds}")
        checks.one_of("precision", self.precision, PRECISIONS)
        if self.precision == "bfloat16" and not (self.fused and family(self.model).recurrent):
            raise ParameterError(
                "precision", "bfloat16 is the fused recurrent step's; use precision='float32'"
            )
        if self.profile and not (self.fused and family(self.model).recurrent):
            raise ParameterError(
                "profile", "times the fused recurrent step: it needs a recurrent model and fused"
            )


def flops_per_char(config: ModelConfig) -> tuple[float, float]:
    """(training, forward) FLOPs per character, matmuls only, of the Keras model.

    Forward: per layer 2*(H*G*H + H*G*H) for the input and recurrent products
    (G = 4 gates for LSTM, 3 for GRU, 1 for SimpleRNN) plus 2*H*V for the
    logits; training is three times the forward (backward costs two). The
    fused path skips the first layer's input product, so its real work is
    lower: GFLOP/s figures use this count, the same for every implementation.
    """
    gates = family(config.model).gates
    h = config.rnn_size
    forward = config.num_layers * 2 * (2 * h * gates * h) + 2 * h * config.vocab_size
    return 3.0 * forward, float(forward)


def _median_rate(run_once, seconds: float) -> float:
    """Median units/s over WINDOWS windows of about seconds/WINDOWS each."""
    rates = []
    for _ in range(WINDOWS):
        done, start = 0, time.perf_counter()
        while True:
            done += run_once()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / WINDOWS:
                break
        rates.append(done / elapsed)
    return float(np.median(rates))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes vs KiB


def run_bench(config: BenchConfig) -> dict:
    """Measure; returns the figures as a flat dict (see ``kerasgen bench --help``)."""
    import keras
    import tensorflow as tf

    from kerasgen.model import count_params

    keras.utils.set_random_seed(config.seed)
    model_config = ModelConfig(
        vocab_size=config.vocab_size,
        model=config.model,
        rnn_size=config.rnn_size,
        num_layers=config.num_layers,
        input_keep_prob=config.input_keep_prob,
        output_keep_prob=config.output_keep_prob,
    )
    rng = np.random.default_rng(config.seed)
    precision = resolve_precision(
        config.precision,
        config.fused
        and family(config.model).recurrent
        and not tf.config.list_physical_devices("GPU"),
    )
    model, train_rate, train_warmup_s, parts = _training(config, model_config, rng, precision)
    sample_1, sample_warmup_s, sample_n, prime_rate = _sampling(config, model_config, model, rng)
    train_flop, forward_flop = flops_per_char(model_config)
    peaks = {dtype: gemm_peak(dtype) for dtype in ("float32", "bfloat16")}
    gflops = train_rate * train_flop / 1e9
    return {
        "train_chars_per_s": round(train_rate, 1),
        "sample_chars_per_s": round(sample_1, 1),
        "sample_batched_chars_per_s": round(sample_n, 1),
        "sample_streams": config.sample_streams,
        "prime_chars_per_s": round(prime_rate, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "precision": precision,
        "gflops": round(gflops, 2),
        # This CPU's float32 and bfloat16 GEMM (kerasgen.profile.gemm_peak), measured in the
        # same run; the share is of the peak in the precision the step computed in.
        "gemm_peak_gflops": round(peaks["float32"], 1),
        "gemm_peak_bf16_gflops": round(peaks["bfloat16"], 1),
        "peak_share": round(gflops / peaks[precision], 4),
        "train_flop_per_char": train_flop,
        "sample_flop_per_char": forward_flop,
        "train_warmup_s": round(train_warmup_s, 2),
        "sample_warmup_s": round(sample_warmup_s, 2),
        "params": count_params(model),
        "config": dataclasses.asdict(config),
        **({"profile_ms": parts} if parts is not None else {}),
    }


def _training(config: BenchConfig, model_config: ModelConfig, rng, precision: str):
    """The model, its training chars/s, the warm-up seconds and (with ``config.profile``)
    the milliseconds of each part of a step."""
    import keras

    from kerasgen import data
    from kerasgen.model import build_model
    from kerasgen.steps import compile_steps

    batch, seq = config.batch_size, config.seq_length
    # Synthetic text: uniform random ids. Throughput does not depend on content.
    ids = rng.integers(0, config.vocab_size, size=batch * seq * 64 + 1)
    batches_of_ids = data.StreamBatches(ids, batch, seq)
    model = build_model(model_config, batch)
    optimizer = keras.optimizers.Adam(learning_rate=0.002, global_clipnorm=5.0)
    optimizer.build(model.trainable_variables)
    # Streams at a line start begin from a zero state, as in training (id 0 plays the newline).
    train_step, _ = compile_steps(
        model,
        optimizer,
        fused=config.fused,
        jit_compile=config.jit_compile,
        line_start_id=0,
        precision=precision,
    )
    batches = iter(batches_of_ids.dataset().repeat())

    def one_step() -> int:
        xb, yb = next(batches)
        float(train_step(xb, yb))  # read the loss back each step, as the training loop does
        return batch * seq

    started = time.perf_counter()
    for _ in range(3):
        one_step()
    warmup = time.perf_counter() - started
    rate = _median_rate(one_step, config.seconds)
    parts = None
    if config.profile:
        parts = profile_training(model, optimizer, batches, precision=precision)
    return model, rate, warmup, parts


def _sampling(config: BenchConfig, model_config: ModelConfig, model, rng):
    """Sampling chars/s of 1 stream and its warm-up, of N streams, and of reading a prime."""
    from kerasgen.model import build_model
    from kerasgen.sampler import Sampler
    from kerasgen.sampling import SamplingOptions
    from kerasgen.vocab import Vocabulary

    vocab = Vocabulary(
        tuple(chr(0x4E00 + i) for i in range(config.vocab_size)), (1,) * config.vocab_size
    )
    options = SamplingOptions(temperature=1.0, seed=config.seed)

    def sampler(streams: int):
        net = build_model(model_config, streams)
        net.set_weights(model.get_weights())
        return Sampler(net, vocab, vocab.chars[0], fused=config.fused)  # a one-token preamble

    def sample_rate(generator) -> tuple[float, float]:
        n = 1024
        started = time.perf_counter()
        generator.generate_ids(n, "", options)  # compiles
        warmup = time.perf_counter() - started
        return _median_rate(
            lambda: generator.batch * generator.generate_ids(n, "", options).shape[1],
            config.seconds,
        ), warmup

    one = sampler(1)
    sample_1, warmup = sample_rate(one)
    sample_n, _ = sample_rate(sampler(config.sample_streams))
    # Reading a long prime: the characters a sample starts after, per second.
    prime = vocab.decode(rng.integers(0, config.vocab_size, size=PRIME_CHARS))

    def read_prime() -> int:
        one.generate_ids(0, prime, options)
        return len(prime)

    return sample_1, warmup, sample_n, _median_rate(read_prime, config.seconds)
