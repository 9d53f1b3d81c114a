"""Document builders of the probe tasks: shapes (generated), COCO, SNLI-VE.

Every builder named by a task YAML's ``dataset_kwargs.builder`` returns one
:class:`~lmms_probe_tasks.data.contract.BuiltDocs` (docs + report). Modules:

* ``contract``: ``BuiltDocs``, the argument checks every builder shares, ``check_docs``;
* ``images``: decode checks, the hub image cache, ``to_rgb``;
* ``sampling``: seeded streams per (seed, task, split) and stratified shuffles;
* ``sources``: local release or hub copy, and fetching only the selected images;
* ``reports``: skip counts, warnings and the assembly of real-data docs;
* one module per dataset: ``shapes`` (with ``shapes_scenes``), ``coco`` (with
  ``coco_source`` and ``coco_negatives``), ``snli_ve``.
"""
