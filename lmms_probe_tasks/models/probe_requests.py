"""Answers probe requests with feature keys: cache lookups, shared-prefix batches, the rest whole, then checks.

The half of :class:`~lmms_probe_tasks.models.hidden_states.HiddenStates` that serves
``probe: true`` requests (the class mixes it in; it routes and holds the model). Per call:
documents the feature cache holds at every probed site are answered from it (the weights
are not even loaded); the others are planned per image (documents that show the same
image and agree past it run that prefix once, then only their suffixes,
:mod:`lmms_probe_tasks.extract.shared_prefix`), the rest run whole in batches; every
computed batch is checked for NaN/inf (:mod:`lmms_probe_tasks.extract.nonfinite`),
cached per document and site, and handed to the task through the in-process store.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from lmms_eval.api.instance import Instance
from loguru import logger

from lmms_probe_tasks import transport
from lmms_probe_tasks.extract import families
from lmms_probe_tasks.extract.nonfinite import keep_row, note_nonfinite
from lmms_probe_tasks.extract.prefix_plan import PrefixBatch, plan_prefix_batches, share_windows
from lmms_probe_tasks.extract.shared_prefix import doc_tokens, extract_prefix_batch, truncate_inputs
from lmms_probe_tasks.transport import doc_key, image_digest


class ProbeRequests:
    """Mixin of :class:`~lmms_probe_tasks.models.hidden_states.HiddenStates`: the probe-request path.

    It reads the wrapper's settings (``cache``, ``taps``, ``plan``, ``share_prefix``,
    ``layers``, ``batch_size``, ``meta``, ...) and calls its ``_doc``, ``_prepare``,
    ``_processor_inputs``, ``extract_sites`` and ``_load_model``.
    """

    def _answer_probes(self, requests: list[Instance], index: list[int], responses: list, bar: Any) -> None:
        """Fill ``responses[index[j]]`` with feature keys: cached documents first, the rest in batches."""
        todo = []  # (response slot, request, cache key, prompt, images, image digest) of documents to compute
        for slot, request in zip(index, requests):
            context, _, visuals = self._doc(request)
            prompt, images = self._prepare(context, visuals)
            digest = image_digest(images) if self.cache or self.share_prefix else None
            keys = {site: doc_key(fp, prompt, digest) for site, fp in self._site_keys.items()} if self.cache else None
            # get() verifies the checksum; the array itself is not kept (rank 0 reads the file).
            if keys and all(self.cache.get(key) is not None for key in keys.values()):
                paths = {site: self.cache.path(key) for site, key in keys.items()}
                self._respond(responses, slot, request, {site: None for site in keys}, paths)
                bar.update(1)
            else:
                todo.append((slot, request, keys, prompt, images, digest))
        # The embeddings alone need no prefix pass to share.
        share = self.share_prefix and not (self.taps.language_only and self.layers[-1] == 0)
        windows, alone = share_windows([item[5] if item[4] and share else "" for item in todo], 16 * self.batch_size)
        n_shared = n_prefixes = 0
        for window in windows:  # each image's documents together; a window's tokens are dropped after it
            shared, rest, tokens = self._plan_sharing(todo, window)
            alone.extend(rest)
            for batch in shared:
                n_shared, n_prefixes = n_shared + len(batch.docs), n_prefixes + len(batch.groups)
                for docs, feats in self._extract_shared(batch, todo, tokens):
                    self._finish([todo[i] for i in docs], feats, responses, bar)
        for start in range(0, len(alone), self.batch_size):
            chunk = [todo[i] for i in alone[start : start + self.batch_size]]
            inputs = self._processor_inputs([c[3] for c in chunk], [c[4] for c in chunk])
            self._finish(chunk, self.extract_sites(inputs, [len(c[4]) for c in chunk]), responses, bar)
        if requests:
            logger.info(
                f"hidden_states: {len(requests)} probe docs on this rank: {len(requests) - len(todo)} from the feature "
                f"cache, {len(todo)} computed ({n_shared} as suffixes of {n_prefixes} shared prefixes)"
                + (f" (cache: {self.cache.root})" if self.cache else " (cache off)")
            )
        for site, bad in self.meta.get("nonfinite", {}).items():
            logger.warning(f"hidden_states: {bad['docs']} docs had NaN or inf {site} features at rows {bad['layers']}")

    def _finish(self, chunk: list[tuple], feats: dict[str, np.ndarray], responses: list, bar: Any) -> None:
        """Check, cache and answer one computed batch (``chunk`` rows as in ``_answer_probes``' todo).

        ``feats``: site -> ``[batch, rows, d]``. A document whose features hold NaN or inf at
        some rows is answered with them as they are (float32, in memory) and never cached
        there: those rows become NaN rows with their reason at aggregation, every other row
        is scored (:mod:`lmms_probe_tasks.extract.nonfinite`).
        """
        bad = {site: ~np.isfinite(x).all(axis=-1) for site, x in feats.items()}  # site -> [batch, rows]
        for site, mask in bad.items():
            if mask.any():
                docs = [f"{c[1].args[4]}/{c[1].args[3]}" for c in chunk]
                record = self.meta.setdefault("nonfinite", {})
                note_nonfinite(record, site, mask, docs, self.plan.rows[site], self._pretrained, self.meta["dtype"])
        for row, (slot, request, keys, *_) in enumerate(chunk):
            arrays, paths = {}, {}
            for site, x in feats.items():
                arrays[site], paths[site] = keep_row(x[row], bad[site][row], self.cache, keys[site] if keys else None)
            self._respond(responses, slot, request, arrays, paths)
        self.meta["feature_cache"]["computed"] += len(chunk)
        bar.update(len(chunk))

    def _plan_sharing(self, todo: list[tuple], window: list[int]) -> tuple[list[PrefixBatch], list[int], dict]:
        """Plan one window of documents (indices into ``todo``): prefix batches, the rest, and their tokens.

        The window's documents are tokenised with their images (the processor decides
        how many image tokens there are).
        """
        tokens = {}
        for start in range(0, len(window), self.batch_size):
            chunk = window[start : start + self.batch_size]
            inputs = self._processor_inputs([todo[i][3] for i in chunk], [todo[i][4] for i in chunk])
            image_mask = families.image_positions(self._config, self.family, inputs)
            tokens.update(zip(chunk, doc_tokens(inputs, image_mask, [todo[i][5] for i in chunk])))
        shared, rest = plan_prefix_batches(tokens, max_groups=self.batch_size)
        return shared, rest, tokens

    def _extract_shared(self, batch: PrefixBatch, todo: list[tuple], tokens: dict[int, Any]) -> Any:
        """Yield ``(todo indices, features)`` per suffix pass of one prefix batch."""
        reps = [group[0] for group in batch.groups]
        inputs = self._processor_inputs([todo[r][3] for r in reps], [todo[r][4] for r in reps], right=True)
        pad_id = getattr(self.tokenizer, "pad_token_id", None) or 0
        yield from extract_prefix_batch(
            self._load_model(), self.family, self._decoder, truncate_inputs(inputs, batch.length), batch, tokens,
            self.pooling, self.taps, self.batch_size, images_per_group=[len(todo[r][4]) for r in reps],
            pad_id=pad_id, device=self._device,
        )  # fmt: skip

    def _respond(self, responses: list, slot: int, request: Instance, arrays: dict, paths: dict) -> None:
        _, _, _, doc_id, task, _ = request.args
        items = {
            site: transport.DocFeatures(arrays[site], self.meta, str(paths[site]) if paths[site] else None)
            for site in arrays
        }
        responses[slot] = transport.STORE.put(items, hint=f"{task}/{doc_id}")
