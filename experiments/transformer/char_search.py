r"""A differentiable transformer search on character-level text (dnas' `transformer` space: per
layer a mixed sequence-mixing op over causal attention with 2/4/8 heads, causal depthwise
convolutions of kernel 3/7/15, a gated linear unit or nothing, then a mixed feed-forward of
expansion 1/2/4 or nothing; pre-norm residual layers, tied embedding).

    dnas run --config experiments/transformer/char_search.py            # tiny_shakespeare
    dnas run --config experiments/transformer/char_search.py:embedded   # ~5-6 min on 2 CPU cores
    dnas search --config experiments/transformer/char_search.py:smoke   # seconds

Not a published protocol (the space is dnas' own): DARTS first order, 4 layers of width 128,
batch 32 segments of 128 characters, SGD with momentum 0.9 (lr 0.2 cosine to 0, clipping 0.25,
weight decay 5e-7), alphas Adam 3e-3 with weight decay 1e-3 (DARTS' recurrent settings),
dropout 0.1; the retraining is the same model size for 10 epochs. tiny_shakespeare is read with
tensorflow-datasets (prepare it once: `tfds build tiny_shakespeare --file_format=array_record`);
`:embedded` reads the text shipped with Python (`dnas.text.load_embedded`).
"""

from dnas import configlib


def get_config(arg: str | None = None):
    c = configlib.default_config()
    c.dataset = "tiny_shakespeare"
    c.space = "transformer"
    c.strategy, c.order = "darts", "first"
    s, t, x = c.search, c.train, c.text
    s.C, s.layers, s.epochs, s.batch_size = 128, 4, 10, 32
    s.lr, s.lr_min, s.momentum, s.weight_decay, s.grad_clip = 0.2, 0.0, 0.9, 5e-7, 0.25
    s.alpha_lr, s.alpha_b1, s.alpha_b2, s.alpha_weight_decay = 3e-3, 0.9, 0.999, 1e-3
    s.crop_padding, s.flip, s.cutout_length = -1, None, 0
    t.C, t.layers, t.epochs, t.batch_size = 128, 4, 10, 32
    t.lr, t.lr_min, t.momentum, t.weight_decay, t.grad_clip = 0.2, 0.0, 0.9, 5e-7, 0.25
    t.auxiliary, t.drop_path_prob, t.cutout_length = False, 0.0, 0
    x.bptt, x.search_lengths, x.train_lengths, x.tar_beta, x.nonmono = 128, "fixed", "fixed", 0.0, 0
    x.eval_batch_size, x.test_batch_size = 16, 16
    c.checkpoint_every_steps, c.log_every_steps = 500, 50
    if arg == "embedded":
        c.dataset = "pydoc"
        s.C, s.epochs, t.C, t.epochs = 64, 2, 64, 3
        x.bptt = 64
    elif arg == "smoke":
        c.dataset = "pydoc"
        s.C, s.epochs, s.batch_size, t.C, t.epochs, t.batch_size = 8, 1, 4, 8, 1, 4
        x.bptt, x.max_tokens, x.eval_batch_size, x.test_batch_size = 8, 600, 4, 4
        c.baseline = False
    elif arg:
        raise ValueError(f"unknown argument {arg!r}; valid: embedded, smoke")
    return c
