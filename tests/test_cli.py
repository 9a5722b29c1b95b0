"""The `dnas` command line."""

import json
import signal
import subprocess
import sys

import pytest

from dnas import cli


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_prints_the_published_darts_v2_figures(capsys):
    argv = ["info", "--genotype", "darts_v2", "--dataset", "cifar10", "--init-channels", "36"]
    code, out, _ = _run(capsys, *argv, "--layers", "20", "--auxiliary")
    assert code == 0
    info = json.loads(out)
    assert info["params"] == 3_349_342 and info["network"] == "NetworkCIFAR"
    assert info["params_total"] > info["params"] and info["macs"] > 0
    assert info["flops"] == info["macs"]  # the old name, kept as an alias


def test_info_for_a_supernet(capsys):
    code, out, _ = _run(capsys, "info", "--supernet", "darts_cnn", "--dataset", "cifar10")
    assert code == 0 and json.loads(out)["params"] == 1_930_618


@pytest.mark.parametrize(
    "argv,message",
    [
        (["info", "--genotype", "darts_v9"], "unknown genotype 'darts_v9'"),
        (["info", "--genotype", "darts_v2", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["info", "--supernet", "nasnet"], "unknown search space 'nasnet'"),
        (["info", "--genotype", "Genotype(normal=[('sep_conv_3x3', 0)"], "expected"),
        (["sweep", "--config.sweep.seeds=0-x"], "sweep.seeds='0-x': expected integers"),
        (
            ["sweep", "--config.sweep.param=search.C", "--config.sweep.param_values=4"],
            "cannot be swept inside one program",
        ),
    ],
)
def test_info_errors_are_one_line(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_ctrl_c_in_a_command_that_is_not_a_stage_is_one_line():
    # plot, info, eval, export: no checkpoint to save, but no traceback either.
    program = (
        "import sys, time\nfrom dnas import cli, train\n"
        "train.evaluate_trained = lambda *a, **k: (print('ready', flush=True), time.sleep(60))\n"
        "sys.exit(cli.main(['eval', 'somewhere']))\n"
    )
    # The child starts with SIGINT's default action: an ignored SIGINT is inherited across exec,
    # and something in a full session's worker (not dnas: it never ignores SIGINT) left it so.
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)  # fmt: skip
    assert proc.stdout.readline() == "ready\n"  # inside the command
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == "dnas eval: interrupted by SIGINT\n", err
