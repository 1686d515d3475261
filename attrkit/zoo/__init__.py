"""What the book needs besides the algorithms: named downloadable assets and ready models.

* :mod:`attrkit.zoo.assets` — photos and data sets by name, from the cache, a mirror or their public URL
  (``python -m attrkit.assets list``);
* :mod:`attrkit.zoo.models` — an ImageNet classifier and the fastai pets learner, ready to explain.

Both stay importable under their historical names, ``attrkit.assets`` and ``attrkit.models`` (the same
module objects, so patching one patches the other).
"""
