"""The ``hidden_states`` lmms-eval model: routes probe requests to feature extraction, others to generation.

One wrapper serves both kinds of request so probing joins an existing eval suite in
one run: a request whose ``generation_kwargs`` carry ``probe: true`` (set by the
probe tasks' template) gets one forward pass and a feature key as its response
(documents that show the same image and agree past it share one pass over that
prefix, then run only their own suffixes); any other request is answered by greedy
generation. The work lives in :mod:`lmms_probe_tasks.extract` (checks, loading,
prompts, capture, shared prefixes) and :mod:`lmms_probe_tasks.transport` (store,
feature cache); the probe-request path is :mod:`lmms_probe_tasks.models.probe_requests`
(mixed in); this class holds the model and routes.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from lmms_probe_tasks import transport
from lmms_probe_tasks.extract import check_pooling, families, find_decoder, parse_layers
from lmms_probe_tasks.extract.generation import greedy_generate, stop_sequences
from lmms_probe_tasks.extract.loading import check_decoder, load_config, load_processor, load_weights
from lmms_probe_tasks.extract.prompts import BLINDS, FALLBACK_LAYOUT, blind_images, build_prompt
from lmms_probe_tasks.extract.settings import (
    DTYPES,
    INITS,
    cache_fingerprint,
    check_batch_size,
    check_choice,
    check_flag,
    check_image_pooling,
    check_model_args,
    extraction_meta,
    resolve_dtype,
)
from lmms_probe_tasks.extract.shared_prefix import (
    right_padding,
)
from lmms_probe_tasks.extract.site_pass import extract_batch, extract_sites
from lmms_probe_tasks.extract.sites import plan_sites, site_fingerprints
from lmms_probe_tasks.extract.weights_id import weights_identity
from lmms_probe_tasks.models.probe_requests import ProbeRequests
from lmms_probe_tasks.transport import open_cache

__all__ = ["BLINDS", "DTYPES", "FALLBACK_LAYOUT", "INITS", "HiddenStates"]


class HiddenStates(ProbeRequests, lmms):
    """lmms-eval model that exposes every layer's hidden state of an image-text model.

    Args:
        pretrained: Hub id or local folder of an ``AutoModelForImageTextToText`` checkpoint.
        revision: Hub revision.
        dtype: ``auto`` (bfloat16 on GPU, float32 on CPU), ``float32``, ``float16``, ``bfloat16``.
        device: ``cuda``, ``cuda:1``, ``cpu``; default: the process's accelerator device.
        device_map: Passed to ``from_pretrained`` (``auto`` spreads one model over GPUs).
        batch_size: Documents per forward pass for probe requests (arrives as a string).
        pooling: ``last`` (final prompt position; default), ``mean`` (non-padding positions),
            ``image`` (image-token positions) or ``text`` (the other non-padding positions).
        layers: ``all`` (default), a range ``0:33:4`` or a list ``[0,8,16,32]``; deeper layers
            than the deepest requested one are not computed.
        init: ``pretrained`` (default) or ``random``: the same architecture with randomly
            initialised weights (seeded by ``seed``), the standard control for probing.
        seed: Seed of the random initialisation.
        blind: ``none`` (default); ``blank`` replaces every image by a mid-grey one of the
            same size; ``noimage`` drops the images from the prompt: the modality baselines.
        share_prefix: ``true`` (default): documents with the same image(s) whose prompts
            agree past the image run that prefix (vision tower included) once and only
            their own suffixes against its KV cache: the same features, faster, where the
            family allows it (:attr:`~lmms_probe_tasks.extract.families.Family.prefix_sharing`);
            ``false``: every document runs whole.
        sites: ``language`` (default: the decoder's layers), ``vision`` (every hidden state of
            the vision encoder), ``projector`` (the image features as the decoder receives
            them), or a list ``[vision,projector,language]``: all from the same forward pass
            (:mod:`lmms_probe_tasks.extract.taps`).
        modules: A glob over ``named_modules()`` names (``*`` one component, ``**`` any) or a
            list of them: each module's output becomes a row ``mNN`` (adds the ``modules`` site).
        save_features: ``true`` writes each task's features per site as safetensors at aggregation.
        feature_cache: Folder of the content-addressed feature cache; ``default`` =
            ``$LMMS_PROBE_FEATURE_CACHE`` or ``~/.cache/lmms_probe_tasks/features``;
            ``none`` disables it. With every document cached, the weights are never loaded.
        trust_remote_code: Allow checkpoint code (default False).
        max_new_tokens: Default generation length for non-probe requests.
    """

    def __init__(
        self,
        pretrained: str,
        revision: str = "main",
        dtype: str = "auto",
        device: str | None = None,
        device_map: str | None = None,
        batch_size: int | str = 1,
        pooling: str = "last",
        layers: Any = "all",
        init: str = "pretrained",
        seed: int = 0,
        blind: str = "none",
        share_prefix: bool | str = True,
        sites: Any = "language",
        modules: Any = None,
        save_features: bool | str = False,
        feature_cache: str | None = "default",
        trust_remote_code: bool = False,
        max_new_tokens: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        # Cheap arguments first, then the config; the weights load on first use.
        check_model_args(kwargs)
        self.pooling = check_pooling(str(pooling))
        self.batch_size_per_gpu = check_batch_size(batch_size)
        self._init, self._seed = check_choice("init", init, INITS), int(seed)
        self.blind = check_choice("blind", blind, BLINDS, " (none = with the image)")
        self._share_prefix = check_flag("share_prefix", share_prefix)
        self._pretrained, trust = str(pretrained), bool(trust_remote_code)
        self._config = load_config(self._pretrained, str(revision), trust)
        self.layers = parse_layers(layers, int(self._config.get_text_config().num_hidden_layers))
        self.family = families.lookup(self._config)
        self.share_prefix = self._share_prefix and self.family.prefix_sharing
        if self._share_prefix and not self.share_prefix:
            logger.info(f"share_prefix: off for {self._config.model_type!r} (see lmms_probe_tasks/extract/families.py)")
        check_image_pooling(self.pooling, self._config, self.family, self.blind)
        skeleton = check_decoder(self._config, self.family, trust)
        self.plan = plan_sites(
            sites, modules, config=self._config, family=self.family, layers=self.layers, blind=self.blind,
            trust_remote_code=trust, skeleton=skeleton,
        )  # fmt: skip
        self.taps = self.plan.taps
        self._save_features = check_flag("save_features", save_features)

        self._place(device, device_map)
        self.torch_dtype = resolve_dtype(str(dtype), str(self._device))
        self._load_kwargs: dict[str, Any] = {
            "revision": revision,
            "dtype": self.torch_dtype,
            "trust_remote_code": trust,
        }
        if device_map and self.accelerator.num_processes == 1:
            self._load_kwargs["device_map"] = device_map
        self._model: Any = None  # loaded on the first document the feature cache does not hold
        self._decoder: Any = None
        self.processor = load_processor(self._pretrained, revision, trust)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.max_new_tokens = int(max_new_tokens)
        self._describe(str(revision), feature_cache)

    def _place(self, device: str | None, device_map: str | None) -> None:
        """Pick this process's device (and rank, under data parallel)."""
        import torch
        from accelerate import Accelerator

        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:
            # Data parallel (accelerate launch / torchrun): one full copy per rank.
            if device_map:
                raise ValueError(
                    "device_map cannot be combined with data parallel; use one process with device_map=auto"
                )
            self._device = self.accelerator.device
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        else:
            self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _describe(self, revision: str, feature_cache: str | None) -> None:
        """Record the extraction settings (results, task prompts) and open the feature cache."""
        self.meta = extraction_meta(
            self._pretrained,
            revision,
            self._config,
            self.torch_dtype,
            init=self._init,
            seed=self._seed,
            pooling=self.pooling,
            layers=self.layers,
            blind=self.blind,
            family=self.family,
            processor=self.processor,
            share_prefix=self.share_prefix,
        )
        self.meta.update(self.plan.meta)
        self.meta["site_rows"] = self.plan.rows
        if self._save_features:
            self.meta["save_features"] = True
        # Identifies the weights from file metadata only: nothing is loaded here.
        self.meta["weights"] = weights_identity(self._pretrained, revision, self._config, self._init)
        transport.ACTIVE_MODEL.clear()
        transport.ACTIVE_MODEL.update(self.meta)
        self.cache = open_cache(feature_cache)
        if self.cache is not None and self.meta["weights"] is None:
            logger.warning(
                f"feature cache off: the weights of pretrained={self._pretrained!r} (revision {revision!r}) cannot be "
                "identified offline (no resolved commit and no cached snapshot), so cached features could belong to "
                "other weights. Fix: pass revision=<commit sha>, or fill the HF cache (huggingface-cli download)."
            )
            self.cache = None
        self.fingerprint = cache_fingerprint(self.meta, self._config, revision)
        self._site_keys = site_fingerprints(self.fingerprint, self.plan)
        self.meta["feature_cache"] = {
            "root": str(self.cache.root) if self.cache else None,
            "stats": self.cache.stats if self.cache else {},
            "computed": 0,
        }

    def _load_model(self) -> Any:
        """Load (or randomly initialise) the weights, once."""
        if self._model is not None:
            return self._model
        model = load_weights(self._pretrained, self._config, self._load_kwargs, self._init, self._seed)
        if "device_map" in self._load_kwargs and self._init != "random":
            self._device = model.device  # where the embeddings live: inputs go there
        else:
            model.to(self._device)
        self._model = model
        self._decoder = find_decoder(model, self.family)
        return model

    # -- lmms-eval plumbing ----------------------------------------------
    @property
    def model(self) -> Any:
        """The underlying transformers model (loaded on first use)."""
        return self._load_model()

    @property
    def device(self) -> Any:
        """Device of the model inputs."""
        return self._device

    @property
    def batch_size(self) -> int:
        """Documents per forward pass."""
        return self.batch_size_per_gpu

    def build_prompt(self, text: str, n_images: int) -> str:
        """Lay out the prompt the way the model family expects (:func:`~lmms_probe_tasks.extract.prompts.build_prompt`).

        Args:
            text: The task's text for this document.
            n_images: Number of images to place before the text.

        Returns:
            The prompt string, ending where the assistant's answer would begin.
        """
        return build_prompt(self.processor, self.family, text, n_images)

    def _prepare(self, text: str, images: list[Any]) -> tuple[str, list[Any]]:
        """The exact prompt and (blind-mode) images one document is run with."""
        (images,) = blind_images([images], self.blind)
        return self.build_prompt(text, len(images)), images

    def _inputs(self, texts: list[str], images: list[list[Any]]) -> Any:
        """Processor output for a batch (right-padded), on the model's device and dtype."""
        prepared = [self._prepare(text, per_doc) for text, per_doc in zip(texts, images)]
        return self._processor_inputs([p for p, _ in prepared], [i for _, i in prepared])

    def _processor_inputs(self, prompts: list[str], images: list[list[Any]], *, right: bool = False) -> Any:
        """Processor output for prepared prompts and images (right-padded with ``right``), on the model's device."""
        model = self._load_model()
        kwargs: dict[str, Any] = {"text": prompts, "return_tensors": "pt", "padding": True}
        if any(images):
            kwargs["images"] = families.processor_images(self.family, images)
        with right_padding(self.tokenizer) if right else contextlib.nullcontext():
            inputs = self.processor(**kwargs)
        # Cast floating inputs (pixel values) to the model's dtype; ids stay integers.
        return inputs.to(self._device, model.dtype) if hasattr(inputs, "to") else inputs

    def extract(self, inputs: Any) -> Any:
        """The decoder rows alone of a batch: ``[batch, len(self.layers), hidden]`` float32 (whatever ``sites``)."""
        model = self._load_model()
        image_mask = None
        if self.pooling in ("image", "text"):
            image_mask = families.image_positions(model.config, self.family, inputs)
        forward = families.forward_kwargs(model, self.family, inputs)
        return extract_batch(model, forward, self.pooling, self.layers, image_mask, self._decoder)

    def extract_sites(self, inputs: Any, images_per_row: list[int]) -> dict[str, np.ndarray]:
        """Every probed site's features of a batch of whole documents: site -> ``[batch, rows, d]`` float32."""
        model = self._load_model()
        return extract_sites(model, self.family, self._decoder, inputs, self.pooling, self.taps, images_per_row)

    # -- request routing ----------------------------------------------------
    def _doc(self, request: Instance) -> tuple[str, dict, list]:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc) if doc_to_visual is not None else []
        return context, gen_kwargs, list(visuals or [])

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answer probe requests with feature keys and all other requests with greedy text."""
        responses: list[str | None] = [None] * len(requests)
        # Data-parallel padding clones only even out ranks' request counts; their
        # responses are never scored, so they get no forward pass.
        padding = {i for i, r in enumerate(requests) if (r.metadata or {}).get("__padding_only__")}
        probe_idx = [i for i, r in enumerate(requests) if (r.args[1] or {}).get("probe") and i not in padding]
        probe_set = set(probe_idx)
        other_idx = [i for i in range(len(requests)) if i not in probe_set and i not in padding]
        # One bar per call; off the terminal (a log file) it redraws at most once a minute.
        tty = sys.stderr.isatty()
        bar = tqdm(
            total=len(requests) - len(padding),
            disable=self.rank != 0,
            desc="hidden_states",
            mininterval=0.1 if tty else 60.0,
            dynamic_ncols=tty,
        )
        self._answer_probes([requests[i] for i in probe_idx], probe_idx, responses, bar)
        for i in other_idx:
            responses[i] = self._generate_one(requests[i])
            bar.update(1)
        bar.close()
        return [r if r is not None else "" for r in responses]

    def _generate_one(self, request: Instance) -> str:
        context, gen_kwargs, visuals = self._doc(request)
        gen_kwargs = dict(gen_kwargs or {})
        max_new_tokens = int(gen_kwargs.get("max_new_tokens", self.max_new_tokens))
        inputs = self._inputs([context], [visuals])
        return greedy_generate(
            self._load_model(), self.tokenizer, self.family, inputs, max_new_tokens, stop_sequences(gen_kwargs)
        )

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Not offered: lmms-eval 0.7.3 turns outputs into strings, which breaks loglikelihood scoring."""
        raise NotImplementedError(
            "hidden_states answers generate_until requests only (probe tasks and generation tasks)"
        )

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        """Not offered: multi-round tasks are out of scope for a probing wrapper."""
        raise NotImplementedError("hidden_states does not support multi-round generation")
