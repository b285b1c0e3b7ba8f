import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def tiny_bert():
    """Factory for a tiny BertForSequenceClassification with kaviz's score attention (tests.helpers.tiny_bert)."""
    from tests.helpers import tiny_bert as make

    return make


@pytest.fixture
def batch():
    torch.manual_seed(1)
    ids = torch.randint(5, 100, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


@pytest.fixture
def store(tmp_path):
    """An empty run store (RunStore) in a temporary folder."""
    from kaviz.store import RunStore

    return RunStore(tmp_path / "runs")


@pytest.fixture
def run(store):
    """A fresh run with the standard test config and unit plan (tests/helpers.py)."""
    from tests.helpers import store_config, store_units

    return store.create_run(store_config(), units=store_units())


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """Every test module leaves torch's thread count as it found it (an in-process run sets
    ``training.num_threads`` for its process)."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and far faster than two on a shared, busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    """The packaged all-MiniLM-L6-v2 tokenizer (offline)."""
    from transformers import AutoTokenizer

    from kaviz.train.models import packaged_model_dir

    return AutoTokenizer.from_pretrained(packaged_model_dir())


@pytest.fixture
def app(runs_dir, monkeypatch):
    """The app (AppTest) over the requesting module's ``runs_dir`` fixture, first page rendered."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("KAVIZ_RUNS", str(runs_dir))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    return at
