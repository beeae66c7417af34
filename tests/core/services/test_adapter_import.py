"""Importing an adapter trained elsewhere by plain PEFT as the first version: checked against the base,
evaluated with intervals, hashed, stored and registered as the root of the lineage, marked imported."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from core.ml.data import PreparedData
from core.ml.model import LoadedModel, ModelError, adapter_sha256, base_sha256, check_imported_adapter
from core.services import adapter_import, registry
from core.services.errors import Conflict
from tests.adapters import register_placeholder_version
from tests.byo import TINY_BASE, train_plain_peft


@pytest.fixture(scope="module")
def peft_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_plain_peft(tmp_path_factory.mktemp("customer") / "lora")


def _edit_config(source: Path, target: Path, **changes: object) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "adapter_config.json").read_text())
    (target / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    return target


def test_a_plain_peft_adapter_becomes_the_imported_root(
    session: Session, small_data: PreparedData, tiny_model: LoadedModel, peft_folder: Path, tmp_path: Path
) -> None:
    adapters_dir = tmp_path / "adapters"
    result = adapter_import.import_adapter(
        session, tiny_model, peft_folder, small_data, adapters_dir, "tiny", base_sha256(TINY_BASE)
    )
    session.commit()
    sha = adapter_sha256(peft_folder)
    assert (result.version_id, result.sha256) == (sha[:16], sha)
    assert result.imported_interactions == len(small_data.samples)
    assert (result.check.rank, result.check.target_modules) == (4, ("q_proj", "v_proj"))
    version = registry.get_version(session, result.version_id)
    assert version.parent_id is None and version.status == "active"
    assert version.config["kind"] == "imported" and version.config["imported"]["rank"] == 4
    assert version.config["imported"]["base_sha256"] == base_sha256(TINY_BASE)
    # evaluated on the test split, each model with its AUC and bootstrap interval
    evaluation = version.metrics["evaluation"]
    assert evaluation["split"] == "test" and evaluation["samples"] == len(small_data.split("test"))
    adapter = evaluation["results"][0]
    assert adapter["name"] == "adapter" and adapter["auc_ci95"][0] <= adapter["auc"] <= adapter["auc_ci95"][1]
    # the store holds a copy with the same weights; the customer's folder is untouched
    stored = Path(version.artifact_path)
    assert stored.parent == adapters_dir.resolve() and adapter_sha256(stored) == sha
    assert peft_folder.exists() and not (peft_folder / "e2u.json").exists()
    active = registry.active_adapter(session)
    assert active is not None and active.version_id == result.version_id
    assert "import_check" not in getattr(tiny_model.model, "peft_config", {})  # freed after evaluation


def test_an_import_after_the_first_version_is_refused(
    session: Session, small_data: PreparedData, tiny_model: LoadedModel, peft_folder: Path, tmp_path: Path
) -> None:
    register_placeholder_version(session)
    with pytest.raises(Conflict, match="can only be the first version"):
        adapter_import.import_adapter(session, tiny_model, peft_folder, small_data, tmp_path, "tiny")


def test_each_misfit_is_named(tiny_model: LoadedModel, peft_folder: Path, tmp_path: Path) -> None:
    def refused(folder: Path, message: str, base_hash: str | None = None) -> None:
        with pytest.raises(ModelError, match=message):
            check_imported_adapter(tiny_model, folder, base_hash)

    refused(tmp_path, "not a PEFT adapter folder")
    refused(peft_folder, "base model's weights hash to", "0" * 64)
    refused(_edit_config(peft_folder, tmp_path / "ia3", peft_type="IA3"), "only LoRA adapters")
    refused(_edit_config(peft_folder, tmp_path / "s2s", task_type="SEQ_2_SEQ_LM"), "task_type")
    refused(
        _edit_config(peft_folder, tmp_path / "other", base_model_name_or_path="HuggingFaceTB/SmolLM2-360M"),
        "trained on base model 'HuggingFaceTB/SmolLM2-360M'; this service runs 'tiny-llama'",
    )
    refused(_edit_config(peft_folder, tmp_path / "rank", r=0), "rank r must be an integer >= 1")
    refused(
        _edit_config(peft_folder, tmp_path / "targets", target_modules=["q_proj", "c_attn"]),
        r"target module\(s\) \['c_attn'\] do not exist",
    )
    refused(_edit_config(peft_folder, tmp_path / "save", modules_to_save=["lm_head"]), "modules_to_save")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(peft_folder, no_weights)
    (no_weights / "adapter_model.safetensors").unlink()
    refused(no_weights, "no adapter_model.safetensors")
    assert check_imported_adapter(tiny_model, peft_folder).target_modules == ("q_proj", "v_proj")


def test_weights_that_do_not_fit_the_base_are_refused(
    tiny_model: LoadedModel, small_data: PreparedData, peft_folder: Path, tmp_path: Path
) -> None:
    # rank 4 weights under a config that claims rank 2: peft cannot load them
    wrong = _edit_config(peft_folder, tmp_path / "shape", r=2)
    check_imported_adapter(tiny_model, wrong)  # the config alone looks fine
    with pytest.raises(ModelError, match="weights do not fit the base model"):
        adapter_import.evaluate_adapter(tiny_model, wrong, small_data, "test")


def test_label_words_must_be_single_tokens(tiny_model: LoadedModel, peft_folder: Path) -> None:
    tiny_model.prompt = replace(tiny_model.prompt, label_words=("Absolutely certainly", "No"))
    with pytest.raises(ModelError, match="label word 'Absolutely certainly'"):
        check_imported_adapter(tiny_model, peft_folder)
