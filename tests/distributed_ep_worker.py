"""Run under `torchrun --nproc_per_node 2`: load each case's folder with its DistributedConfig, run the
shared token ids, and write (rank 0) the logits, the local shape of one expert weight and any error."""
import json
import os
import sys

import torch

torch.set_num_threads(1)

import zoo  # noqa: E402,F401  (registers the zoo's model types with the Auto classes)
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.distributed import DistributedConfig  # noqa: E402


def run_case(case: dict, ids: torch.Tensor) -> dict:
    try:
        model = AutoModelForCausalLM.from_pretrained(case["folder"], distributed_config=DistributedConfig(**case["config"]))
    except ValueError as error:
        return {"error": str(error)}
    weight = model.get_parameter(case["expert_weight"])
    local = weight.to_local() if hasattr(weight, "to_local") else weight
    with torch.no_grad():
        logits = model(ids).logits
    return {"logits": logits.tolist(), "local_shape": list(local.shape), "global_shape": list(weight.shape)}


def main(cases_file: str, out_file: str) -> None:
    cases = json.loads(open(cases_file).read())
    ids = torch.tensor(cases.pop("ids"))
    results = {name: run_case(case, ids) for name, case in cases.items()}
    if int(os.environ["RANK"]) == 0:
        with open(out_file, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
