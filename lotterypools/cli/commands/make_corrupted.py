"""Write a CIFAR-C-like corrupted copy of a data set's test split, in the CIFAR-10-C layout.

One <corruption>.npy per corruption (5 severities x N test images, uint8, (5N, H, W, C)), labels.npy,
corruptions.json and examples.png (one image under every corruption and severity). The corruptions are
lotterypools' own implementations with CIFAR-10-C's severity constants; all apply to grey images (Fashion-MNIST, MNIST) as well as colour ones.

Example (Fashion-MNIST-C-like, all corruptions):
    python make_corrupted.py --dataset fashionmnist --data ../data --out ../data/fashionmnist-c
"""

from __future__ import annotations

import argparse
import os

from ...config.names import CORRUPTION_NAMES, SEVERITIES
from ..flags import add_data_arguments
from ...config.commands import CorruptionSettings
from ...config.settings import add_config_arguments
from ...core.errors import NOTHING_TO_RESUME, cli_entry
from ...core.files import check_writable_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="folder receiving <corruption>.npy files and labels.npy")
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTION_NAMES),
                        help=f"corruptions to write (default all: {' '.join(CORRUPTION_NAMES)})")
    add_config_arguments(parser, {"corruption": "corruptions"}, cls=CorruptionSettings)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    return parser


@cli_entry(interrupted=NOTHING_TO_RESUME)
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ...analysis.plots import plot_corruption_examples
    from ..setup import load_data
    from ...data.corruptions import CorruptedSet, writable_corruptions, write_corrupted_set
    from ...data.datasets import Split
    from ...core.device import resolve_device

    names = writable_corruptions(args.corruptions)
    check_writable_folder(args.out, "--out", create=False)
    data = load_data(args)
    test = Split(data.test.images[: args.limit], data.test.labels[: args.limit]) if args.limit else data.test
    print(f"{args.dataset} test split, {len(test)} images -> {args.out} (CIFAR-C-like)", flush=True)
    write_corrupted_set(test, args.out, names, args.seed, resolve_device(args.device),
                        source=f"{args.dataset} test split from {data.source}")
    written = CorruptedSet(args.out)
    plot_corruption_examples({name: [written.split(name, s).images[0] for s in SEVERITIES]
                              for name in names}, os.path.join(args.out, "examples.png"))
    print(f"wrote {args.out}: {', '.join(names)}, labels.npy, corruptions.json, examples.png")


if __name__ == "__main__":
    main()
