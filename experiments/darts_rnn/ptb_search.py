r"""DARTS recurrent cell search on Penn Treebank (Liu et al., ICLR 2019, Sec. 3.2 and A.1.2;
quark0/darts `rnn/train_search.py`), then its evaluation protocol (`ptb_eval.py`'s) for `dnas run`.

    dnas search --config experiments/darts_rnn/ptb_search.py     # PTB in data/penn
    dnas search --config experiments/darts_rnn/ptb_search.py:second --config.data.text_dir=DIR
    dnas run --config experiments/darts_rnn/ptb_search.py:embedded     # ~6.5 min on 2 CPU cores
    dnas search --config experiments/darts_rnn/ptb_search.py:smoke      # seconds

Penn Treebank is not in tensorflow-datasets: put the Mikolov PTB files (`ptb.train.txt` ...
renamed `train.txt`, `valid.txt`, `test.txt`, as awd-lstm-lm's `getdata.sh` does) in a directory
and name it with `--config.data.text_dir`. `:embedded` searches and retrains on the embedded
character-level text (Python's `pydoc_data.topics`, `dnas.text.load_embedded`): a small cell
and model, not the paper's numbers.

Protocol: embedding and hidden size 300, 8 nodes, batch 256, BPTT 35 (bptt/2 one segment in 20),
50 epochs, SGD lr 20 (times the segment's length / 35), no momentum, weight decay 5e-7,
gradient clipping 0.25, temporal activation regularisation 1e-3; dropouts 0.75 (output), 0.25
(hidden), 0.75 (input of the cell), 0.2 (embedded input), 0 (embedding); a BatchNorm without
affine parameters after every node; alphas Adam lr 3e-3, betas (0.9, 0.999), weight decay 1e-3,
initialised N(0, 1e-3); the alphas learn on the validation text. `:second`: the second-order
hypergradient (DARTS_V2).
Paper: DARTS (second order) 55.7 PTB test perplexity with 23M parameters after the evaluation
protocol; DARTS (first order) 60.5; search 1 GPU-day (second order) on a 1080Ti.
"""

from dnas import configlib


def get_config(arg: str | None = None):
    c = configlib.default_config()
    c.dataset = "text_dir"
    c.data.text_dir = "data/penn"  # --config.data.text_dir=DIR: where the PTB files are
    c.space = "darts_rnn"
    c.strategy, c.order = "darts", "first"
    s = c.search
    s.C, s.layers, s.epochs, s.batch_size = 300, 1, 50, 256
    s.lr, s.lr_min, s.momentum, s.weight_decay, s.grad_clip = 20.0, 20.0, 0.0, 5e-7, 0.25
    s.alpha_lr, s.alpha_b1, s.alpha_b2, s.alpha_weight_decay = 3e-3, 0.9, 0.999, 1e-3
    s.alpha_init_scale = 1e-3
    s.crop_padding, s.flip, s.cutout_length = -1, None, 0
    x = c.text
    x.bptt, x.search_lengths, x.tar_beta = 35, "halve", 1e-3
    eval_protocol(c)
    c.checkpoint_every_steps, c.log_every_steps = 500, 50
    arg = arg or ""
    if arg.startswith("second"):
        c.order = "second"
        arg = arg.removeprefix("second").removeprefix("_")
    if arg == "embedded":
        embedded(c)
    elif arg == "smoke":
        smoke(c)
    elif arg:
        raise ValueError(f"unknown argument {arg!r}; valid: second, embedded, smoke, second_smoke")
    return c


def eval_protocol(c):
    """quark0/darts `rnn/train.py`: size 850, batch 64, BPTT 35 with random lengths (N(35, 5),
    N(17.5, 5) one segment in 20, at least 5 and at most 55), SGD lr 20 (times length / 35),
    weight decay 8e-7, clipping 0.25, switching to averaged SGD when the validation loss is worse
    than the best before the last 5 epochs (NT-ASGD), 8,000 epochs; dropouts 0.75 / 0.25 / 0.75
    / 0.2 and 0.1 on the embedding; validation in 10 columns, test in 1."""
    t, x = c.train, c.text
    t.C, t.layers, t.epochs, t.batch_size = 850, 1, 8000, 64
    t.lr, t.lr_min, t.momentum, t.weight_decay, t.grad_clip = 20.0, 20.0, 0.0, 8e-7, 0.25
    t.auxiliary, t.drop_path_prob, t.cutout_length = False, 0.0, 0
    x.train_lengths, x.max_seq_len_delta, x.nonmono = "normal", 20, 5
    x.eval_batch_size, x.test_batch_size = 10, 1
    return c


def embedded(c):
    """The embedded pydoc text at character level, about 6.5 minutes on 2 CPU cores:
    size 32, batch 32, BPTT 35, 2 search epochs at lr 5 (the paper's 20 diverges here: a size-64
    supernet's loss rose above the uniform model's within an epoch); retraining size 128 for 2
    epochs at lr 20. (Size 32 steps in 0.21 s here, 64 in 0.45 s and batch 64 in 1.2 s.)"""
    c.dataset = "pydoc"
    s, t = c.search, c.train
    s.C, s.batch_size, s.epochs = 32, 32, 2
    s.lr = s.lr_min = 5.0
    t.C, t.batch_size, t.epochs = 128, 32, 2
    c.text.dropout = c.text.dropoutx = 0.25  # a small model on a small text: lighter dropout
    c.checkpoint_every_steps, c.log_every_steps = 200, 20
    return c


def smoke(c):
    """Seconds: the first 600 characters of each split of the embedded text, size 8, batch 4,
    BPTT 8 (19 steps an epoch), no baseline."""
    c.dataset = "pydoc"
    s, t, x = c.search, c.train, c.text
    s.C, s.batch_size, s.epochs = 8, 4, 1
    t.C, t.batch_size, t.epochs = 8, 4, 1
    x.bptt, x.max_seq_len_delta, x.max_tokens = 8, 4, 600
    x.eval_batch_size, x.test_batch_size = 4, 4
    c.baseline = False
    return c
