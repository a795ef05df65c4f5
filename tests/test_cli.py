"""The command line survives torchrun: torchrun's own parser classifies every `--option` on the line
(abbreviations included) before it hands the rest to our module, so none of our options may be a
prefix of one of torchrun's (e.g. `--run` of `--run-path`)."""

import pytest
from torch.distributed.run import get_args_parser

from helpers.cli import build_parser


def our_options():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    top = [("train", opt) for a in parser._actions for opt in a.option_strings if opt not in ("-h", "--help")]
    return top + [
        (name, opt)
        for name, sp in sub.choices.items()
        for a in sp._actions
        for opt in a.option_strings
        if opt not in ("-h", "--help")
    ]


@pytest.mark.parametrize("command, option", our_options())
def test_every_option_passes_through_torchrun(command, option):
    line = ["--nproc-per-node", "2", "-m", "helpers", command, option, "x"]
    args = get_args_parser().parse_args(line)  # exits (SystemExit) on "ambiguous option"
    assert args.training_script == "helpers" and args.training_script_args == [command, option, "x"]
