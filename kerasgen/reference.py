"""The plain step-by-step sampler: ``generate_reference``, one eager model call per token.

It is the definition of sampling that the fast path (``kerasgen.sampler``, compiled chunks
and rows) is tested against: the same selection rule (``kerasgen.sampling``), the same
prefix, nothing compiled.
"""

from __future__ import annotations

import numpy as np

from kerasgen.sampling import SamplingOptions, glue_rule, select_next, space_id
from kerasgen.streams import prefix_ids


def generate_reference(
    model,
    vocab,
    n: int,
    prime: str = "",
    options: SamplingOptions | None = None,
    preamble: str = "",
) -> np.ndarray:
    """The plain step-by-step sampler: one eager model call per token, (N, n) ids.

    Reads the prefix in one call from a zero state; a transformer reads the
    last ``context`` tokens of everything so far, unpadded.
    """
    from kerasgen.model import context_length, reset_states

    batch = int(model.inputs[0].shape[0])
    context = context_length(model)
    prefix = prefix_ids(vocab, preamble, prime)
    seen = np.tile(prefix[None, :], (batch, 1))  # (N, so far)
    reset_states(model)
    if context is None and len(prefix) > 1:
        model(seen[:, :-1], training=False)
    ids = seen[:, -1]
    space, glue = space_id(vocab), glue_rule(vocab)
    options = options or SamplingOptions()
    out = np.zeros((batch, n), np.int32)
    for step in range(n):
        if context is None:
            logits = model(ids[:, None], training=False)[:, -1, :]
        else:
            logits = model(seen[:, -context:], training=False)[:, -1, :]
        ids = select_next(
            logits, ids, step, options.seed, options.temperature, options, space, glue
        ).numpy()
        out[:, step] = ids
        seen = np.concatenate([seen, ids[:, None]], axis=1)
    return out
