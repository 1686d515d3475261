"""What the book needs besides the algorithms: named downloadable assets and ready models.

* :mod:`attrkit.zoo.assets` — photos and data sets by name, from the cache, a mirror or their public URL
  (``python -m attrkit.assets list``);
* :mod:`attrkit.zoo.annotations` — the Oxford-IIIT Pet sample's outlines and head boxes as masks;
* :mod:`attrkit.zoo.models` — an ImageNet classifier and the fastai pets learner, ready to explain;
* :mod:`attrkit.zoo.text_models` — the Sentence Polarity corpus, GloVe vectors, MiniLM and SmolLM2, offline from
  pinned package files.

Their public names are also importable under the short names ``attrkit.assets``, ``attrkit.models`` and
``attrkit.text_models`` (plain re-exports: patch internals here, in ``attrkit.zoo``).
"""
