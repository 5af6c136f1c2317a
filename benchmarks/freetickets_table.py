r"""One table: Lottery Pools' pooled ticket, the IMP ticket, the IMP output ensemble, and the DST and EDST
ensembles of FreeTickets, on one test set (accuracy, NLL, ECE, disagreement, parameters at inference, epochs).

Every row is a list of ticket files (an original-layout ``*model_SA_best.pth.tar`` with ``weight_mask`` entries,
or a FreeTickets ticket with ``masks``); a row of several files is their output ensemble (mean softmax).
Example (the README's Fashion-MNIST table):
    python benchmarks/freetickets_table.py --dataset fashionmnist --model conv4 --out benchmarks/results/freetickets_fmnist \
        --row "Lottery Pools pooled ticket|9|$POOLED/3model_SA_best.pth.tar" \
        --row "IMP ticket|9|$IMP41/3model_SA_best.pth.tar" ...
``--row "name|training epochs|file[,file...]"``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lotterypools.core.errors import UserError, cli_entry  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", action="append", required=True, help="'name|training epochs|file[,file...]' (repeat)")
    parser.add_argument("--dataset", default="fashionmnist", help="data set whose test split is used (default fashionmnist)")
    parser.add_argument("--model", default="conv4", help="the tickets' model (default conv4)")
    parser.add_argument("--data_dir", default="data", help="data folder (default data)")
    parser.add_argument("--out", required=True, help="output stem: <out>.json and <out>.csv")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    return parser


def read_ticket(path: Path) -> tuple[dict, dict]:
    """Plain weights and masks of a ticket in either layout."""
    from lotterypools.core.torchfiles import load_file, state_dict_of
    from lotterypools.training.masks import split_pruned_state

    saved = load_file(path)
    weights, masks = split_pruned_state(state_dict_of(saved, path))
    if isinstance(saved, dict) and saved.get("masks"):
        masks = saved["masks"]
    return weights, {k: v.bool() for k, v in masks.items()}


def inference_parameters(model, weights: dict, masks: dict) -> int:
    """Parameters a sparse implementation stores: the masks' kept entries for masked tensors, all others in full."""
    names = [name for name, _ in model.named_parameters()]
    return sum(int(masks[n].sum()) if n in masks else weights[n].numel() for n in names)


def densities(weights: dict, masks: dict, conv_names: list[str], linear_names: list[str]) -> dict:
    def kept(names):
        total = sum(weights[n].numel() for n in names)
        return sum(int(masks[n].sum()) if n in masks else weights[n].numel() for n in names) / total
    return {"conv_density": kept(conv_names), "conv_linear_density": kept(conv_names + linear_names)}


@cli_entry
def main(argv=None) -> list[dict]:
    import torch
    from torch import nn

    from lotterypools.analysis.ensembles import average_probabilities, member_probabilities
    from lotterypools.analysis.calibration import disagreement_matrix, prediction_metrics
    from lotterypools.data.datasets import BatchSource, dataset_spec, load_dataset
    from lotterypools.models import build_model
    from lotterypools.core.records import format_table, provenance, write_csv, write_json

    args = build_parser().parse_args(argv)
    spec = dataset_spec(args.dataset)
    model = build_model(args.model, spec.num_classes, spec.channels, spec.mean, spec.std, spec.image_size)
    conv = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linear = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    data = load_dataset(args.dataset, args.data_dir, download=False)
    device = torch.device(args.device)
    batches = BatchSource(data.test, 500, device)
    rows = []
    for spec_text in args.row:
        try:
            name, epochs, files = spec_text.split("|")
        except ValueError:
            raise UserError(f"--row {spec_text!r} must be 'name|training epochs|file[,file...]'") from None
        tickets = {Path(f).parent.name + "/" + Path(f).name: read_ticket(Path(f)) for f in files.split(",")}
        members, labels = member_probabilities(model.to(device), {k: w for k, (w, _) in tickets.items()}, batches, device)
        metrics = prediction_metrics(average_probabilities(list(members.values())), labels)
        matrix = disagreement_matrix([p.argmax(1) for p in members.values()])
        pairs = [matrix[i][j] for i in range(len(matrix)) for j in range(len(matrix)) if i < j]
        member_acc = [prediction_metrics(p, labels)["accuracy"] for p in members.values()]
        first_weights, first_masks = next(iter(tickets.values()))
        rows.append({"row": name, "members": len(tickets), "accuracy": metrics["accuracy"], "nll": metrics["nll"],
                     "ece": metrics["ece"], "brier": metrics["brier"],
                     "disagreement": sum(pairs) / len(pairs) if pairs else None,
                     "member_accuracy": member_acc,
                     "parameters": sum(inference_parameters(model, w, m) for w, m in tickets.values()),
                     "training_epochs": float(epochs), **densities(first_weights, first_masks, conv, linear),
                     "files": list(files.split(","))})
    columns = ["row", "members", "accuracy", "nll", "ece", "disagreement", "parameters", "training_epochs",
               "conv_density", "conv_linear_density"]
    print(format_table(rows, columns, digits=4))
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"rows": rows, "test_images": len(labels), "dataset": args.dataset,
                                          "model": args.model, "provenance": provenance()})
    write_csv(out.with_suffix(".csv"), rows, columns + ["member_accuracy"])
    return rows


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
