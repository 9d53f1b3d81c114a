"""The ``hidden_states`` lmms-eval model: probe requests -> per-layer features; other requests -> greedy text.

One wrapper serves both kinds of request so probing joins an existing eval suite in
one run: a request whose ``generation_kwargs`` carry ``probe: true`` (set by the
probe tasks' template) gets one forward pass and a feature key as its response;
any other request is answered by greedy generation.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from lmms_probe_tasks import __version__, families, transport
from lmms_probe_tasks.extract import check_pooling, extract_batch, find_decoder, parse_layers
from lmms_probe_tasks.feature_cache import FeatureCache, default_root, doc_key, image_digest

DTYPES = ("auto", "float32", "float16", "bfloat16")
INITS = ("pretrained", "random")
BLINDS = ("none", "blank", "noimage")
#: Prompt layout used when a chat-template family's processor has no chat template: one
#: image token per image on its own line, then the task's text (the LLaVA-1.5 convention).
FALLBACK_LAYOUT = "{image_tokens}\n{text}"


def _check_pretrained(pretrained: str, revision: str, trust_remote_code: bool) -> Any:
    """Load the config, turning hub/disk failures and wrong model kinds into one clear error."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    fix = (
        "Fix: give an existing checkpoint folder (config.json inside) or a hub id such as "
        "llava-hf/llava-1.5-7b-hf (with network access or a filled HF cache)."
    )
    looks_local = pretrained.startswith((".", "/", "~"))  # hub ids never start so
    if looks_local and not os.path.isdir(os.path.expanduser(pretrained)):
        raise ValueError(f"pretrained={pretrained!r}: no such checkpoint folder. {fix}")
    try:
        config = AutoConfig.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as exc:  # OSError, ValueError, HF errors: all mean "cannot load that name"
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise ValueError(
                f"pretrained={pretrained!r} ships its own model code, which is not run unless you allow it. "
                "Fix: add trust_remote_code=true to --model_args if you trust that checkpoint's code."
            ) from None
        where = "local folder" if os.path.isdir(pretrained) else "hub id or local folder"
        raise ValueError(
            f"pretrained={pretrained!r} could not be loaded as a {where}: {str(exc).splitlines()[0]} {fix}"
        ) from None
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not trust_remote_code:
        raise ValueError(
            f"pretrained={pretrained!r} is a {model_type!r} checkpoint, not an image-text model: "
            "the hidden_states model needs a checkpoint loadable with AutoModelForImageTextToText "
            f"(e.g. {', '.join(sorted(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)[:8])}, ...)."
        )
    return config


def _check_decoder(config: Any, family: Any, trust_remote_code: bool) -> None:
    """Find the probed stack on a weightless copy of the architecture (``meta`` device).

    The weights load lazily (maybe never, with a full feature cache), so this is how a family
    whose decoder cannot be found fails before any data work instead of after it.

    Raises:
        ValueError: Naming the model type and what was looked for.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    try:
        with torch.device("meta"):
            skeleton = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # an architecture transformers cannot build is reported at load time instead
        logger.debug(f"skipping the early decoder check for {config.model_type!r}: {exc}")
        return
    find_decoder(skeleton, family)


def _resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; valid: {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class HiddenStates(lmms):
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
        feature_cache: str | None = "default",
        trust_remote_code: bool = False,
        max_new_tokens: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(
                f"unknown model_args {sorted(kwargs)} for --model hidden_states; valid: pretrained, revision, "
                "dtype, device, device_map, batch_size, pooling, layers, init, seed, blind, feature_cache, "
                "trust_remote_code, max_new_tokens"
            )
        import torch
        from accelerate import Accelerator
        from transformers import AutoProcessor
        from transformers import __version__ as transformers_version

        # Validate cheap arguments before touching the checkpoint.
        self.pooling = check_pooling(str(pooling))
        self.batch_size_per_gpu = int(batch_size)
        if self.batch_size_per_gpu < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        if init not in INITS:
            raise ValueError(f"init={init!r} is not supported; valid: {', '.join(INITS)}")
        if blind not in BLINDS:
            raise ValueError(f"blind={blind!r} is not supported; valid: {', '.join(BLINDS)} (none = with the image)")
        self.blind = blind
        pretrained = str(pretrained)
        config = _check_pretrained(pretrained, str(revision), bool(trust_remote_code))
        text_config = config.get_text_config()
        n_layers = int(text_config.num_hidden_layers)
        self.layers = parse_layers(layers, n_layers)
        self.family = families.lookup(config)
        no_positions = self.family.image_positions == "cross_attention" or (
            self.family.image_positions == "image_token_id" and getattr(config, "image_token_id", None) is None
        )
        if self.pooling in ("image", "text") and (no_positions or blind == "noimage"):
            why = (
                "blind=noimage puts no image in the prompt"
                if blind == "noimage"
                else (f"no sequence position of a {config.model_type!r} model holds image features")
            )
            raise ValueError(f"pooling={self.pooling!r} needs image-token positions, but {why}; valid here: last, mean")

        _check_decoder(config, self.family, bool(trust_remote_code))

        accelerator = Accelerator()
        if accelerator.num_processes > 1:
            # Data parallel (accelerate launch / torchrun): one full copy per rank.
            if device_map:
                raise ValueError(
                    "device_map cannot be combined with data parallel; use one process with device_map=auto"
                )
            self._device = accelerator.device
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        else:
            self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.accelerator = accelerator
        torch_dtype = _resolve_dtype(str(dtype), str(self._device))

        self._load_kwargs: dict[str, Any] = {
            "revision": revision,
            "dtype": torch_dtype,
            "trust_remote_code": bool(trust_remote_code),
        }
        if device_map and accelerator.num_processes == 1:
            self._load_kwargs["device_map"] = device_map
        self._pretrained, self._config, self._init, self._seed = pretrained, config, init, int(seed)
        self._model: Any = None  # loaded on the first document the feature cache does not hold
        self._decoder: Any = None
        self.processor = AutoProcessor.from_pretrained(
            pretrained, revision=revision, trust_remote_code=bool(trust_remote_code)
        )
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        # Right padding: real tokens keep positions 0..n-1, so a causal decoder gives each
        # document the same states alone or in a batch; pooling reads the attention mask.
        self.tokenizer.padding_side = "right"
        self.max_new_tokens = int(max_new_tokens)
        self.torch_dtype = torch_dtype
        self.meta = {
            "model": pretrained,
            "revision": str(revision),
            "model_type": config.model_type,
            "dtype": str(torch_dtype).replace("torch.", ""),
            "init": init if init == "pretrained" else f"random (seed {int(seed)})",
            "pooling": self.pooling,
            "n_layers": n_layers,
            "layers": list(self.layers),
            "hidden_size": int(text_config.hidden_size),
            "layer_0": "input embeddings of the language decoder (image features in place)",
            "last_layer": "decoder output after the final norm (transformers' hidden_states convention)",
            "blind": blind,
            "stack": self.family.stack,
            "prompt_format": self._prompt_format(),
            "family_notes": self.family.notes,
        }
        transport.ACTIVE_MODEL.clear()
        transport.ACTIVE_MODEL.update(self.meta)
        cache_off = feature_cache is None or str(feature_cache).lower() in ("none", "off", "false", "")
        self.cache = (
            None if cache_off else FeatureCache(default_root() if feature_cache == "default" else str(feature_cache))
        )
        self.fingerprint = {
            **{
                k: self.meta[k] for k in ("model", "model_type", "dtype", "init", "pooling", "layers", "blind", "stack")
            },
            # The resolved commit when loaded from the hub; the config hash catches local edits.
            "revision": getattr(config, "_commit_hash", None) or str(revision),
            "config_sha256": hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest(),
            "versions": {"lmms-probe-tasks": __version__, "transformers": transformers_version},
        }
        self.meta["feature_cache"] = {
            "root": str(self.cache.root) if self.cache else None,
            "stats": self.cache.stats if self.cache else {},
            "computed": 0,
        }

    def _load_model(self) -> Any:
        """Load (or randomly initialise) the weights, once."""
        if self._model is not None:
            return self._model
        import torch
        from transformers import AutoModelForImageTextToText

        kwargs = dict(self._load_kwargs)
        if self._init == "random":
            # Same architecture and config, fresh weights: what probing results must beat.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._seed)
                model = AutoModelForImageTextToText.from_config(
                    self._config, dtype=kwargs["dtype"], trust_remote_code=kwargs["trust_remote_code"]
                )
            kwargs.pop("device_map", None)
        else:
            model = AutoModelForImageTextToText.from_pretrained(self._pretrained, **kwargs)
        model.eval()
        if "device_map" in kwargs:
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

    def _prompt_format(self) -> str:
        if self.family.prompt == "chat_template":
            return "chat_template" if getattr(self.processor, "chat_template", None) else "fallback: " + FALLBACK_LAYOUT
        return {"text": "bare text (the processor inserts the image slots)"}.get(
            self.family.prompt, "image token(s) then text"
        )

    def build_prompt(self, text: str, n_images: int) -> str:
        """Lay out the prompt the way the model family expects (see :mod:`lmms_probe_tasks.families`).

        Chat-template families get the processor's chat template (images first, then the
        text, then the generation prompt); without a template, :data:`FALLBACK_LAYOUT`.

        Args:
            text: The task's text for this document.
            n_images: Number of images to place before the text.

        Returns:
            The prompt string, ending where the assistant's answer would begin.
        """
        if self.family.prompt == "chat_template" and not getattr(self.processor, "chat_template", None):
            image_token = getattr(self.processor, "image_token", None) or "<image>"
            return (
                FALLBACK_LAYOUT.format(image_tokens=" ".join([image_token] * n_images), text=text) if n_images else text
            )
        return families.build_prompt(self.processor, self.family, text, n_images)

    def _visuals(self, images: list[list[Any]]) -> list[list[Any]]:
        """Apply the ``blind`` baseline to a batch's images."""
        if self.blind == "noimage":
            return [[] for _ in images]
        if self.blind == "blank":
            from PIL import Image

            return [[Image.new("RGB", im.size, (128, 128, 128)) for im in per_doc] for per_doc in images]
        return images

    def _prepare(self, text: str, images: list[Any]) -> tuple[str, list[Any]]:
        """The exact prompt and (blind-mode) images one document is run with."""
        (images,) = self._visuals([images])
        return self.build_prompt(text, len(images)), images

    def _inputs(self, texts: list[str], images: list[list[Any]]) -> Any:
        """Processor output for a batch (right-padded), on the model's device and dtype."""
        prepared = [self._prepare(text, per_doc) for text, per_doc in zip(texts, images)]
        return self._processor_inputs([p for p, _ in prepared], [i for _, i in prepared])

    def _processor_inputs(self, prompts: list[str], images: list[list[Any]]) -> Any:
        model = self._load_model()
        kwargs: dict[str, Any] = {"text": prompts, "return_tensors": "pt", "padding": True}
        if any(images):
            kwargs["images"] = families.processor_images(self.family, images)
        inputs = self.processor(**kwargs)
        # Cast floating inputs (pixel values) to the model's dtype; ids stay integers.
        return inputs.to(self._device, model.dtype) if hasattr(inputs, "to") else inputs

    def extract(self, inputs: Any) -> Any:
        """Pooled per-layer features of a batch: ``[batch, len(self.layers), hidden]`` float16."""
        model = self._load_model()
        image_mask = None
        if self.pooling in ("image", "text"):
            image_mask = families.image_positions(model.config, self.family, inputs)
        forward = families.forward_kwargs(model, self.family, inputs)
        return extract_batch(model, forward, self.pooling, self.layers, image_mask, self._decoder)

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
        bar = tqdm(total=len(requests) - len(padding), disable=self.rank != 0, desc="hidden_states")
        self._answer_probes([requests[i] for i in probe_idx], probe_idx, responses, bar)
        for i in other_idx:
            responses[i] = self._generate_one(requests[i])
            bar.update(1)
        bar.close()
        return [r if r is not None else "" for r in responses]

    def _answer_probes(self, requests: list[Instance], index: list[int], responses: list, bar: Any) -> None:
        """Fill ``responses[index[j]]`` with feature keys: cached documents first, the rest in batches."""
        todo = []  # (response slot, cache key, prompt, images) of documents to compute
        for slot, request in zip(index, requests):
            context, _, visuals = self._doc(request)
            prompt, images = self._prepare(context, visuals)
            key = doc_key(self.fingerprint, prompt, image_digest(images)) if self.cache else None
            # get() verifies the checksum; the array itself is not kept (rank 0 reads the file).
            if self.cache and self.cache.get(key) is not None:
                self._respond(responses, slot, request, None, self.cache.path(key))
                bar.update(1)
            else:
                todo.append((slot, request, key, prompt, images))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            feats = self.extract(self._processor_inputs([c[3] for c in chunk], [c[4] for c in chunk]))
            for row, (slot, request, key, _, _) in enumerate(chunk):
                # Written per batch, so a killed run resumes after its last whole batch.
                path = self.cache.put(key, feats[row]) if self.cache else None
                # With a cache file the array is not held: 50k docs must not pile up in RAM.
                self._respond(responses, slot, request, None if path else feats[row], path)
            self.meta["feature_cache"]["computed"] += len(chunk)
            bar.update(len(chunk))
        if requests:
            logger.info(
                f"hidden_states: {len(requests)} probe docs on this rank: {len(requests) - len(todo)} from the feature "
                f"cache, {len(todo)} computed" + (f" (cache: {self.cache.root})" if self.cache else " (cache off)")
            )

    def _respond(self, responses: list, slot: int, request: Instance, feats: Any, path: Any) -> None:
        _, _, _, doc_id, task, _ = request.args
        item = transport.DocFeatures(feats, self.meta, str(path) if path else None)
        responses[slot] = transport.STORE.put(item, hint=f"{task}/{doc_id}")

    def _generate_one(self, request: Instance) -> str:
        import torch

        context, gen_kwargs, visuals = self._doc(request)
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        inputs = self._inputs([context], [visuals])
        inputs = {k: v for k, v in inputs.items() if k not in self.family.drop_inputs}
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self._load_model().generate(
                **inputs,
                do_sample=False,
                num_beams=1,
                max_new_tokens=int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)),
                pad_token_id=pad_id,
            )
        # Decoder-only models echo the prompt; an encoder-decoder's output is only the answer.
        start = 0 if self.family.decoder_input_ids else inputs["input_ids"].shape[1]
        text = self.tokenizer.decode(out[0, start:], skip_special_tokens=True)
        for stop in until:
            if stop:
                text = text.split(stop)[0]
        return text

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Not offered: lmms-eval 0.7.3 turns outputs into strings, which breaks loglikelihood scoring."""
        raise NotImplementedError(
            "hidden_states answers generate_until requests only (probe tasks and generation tasks)"
        )

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        """Not offered: multi-round tasks are out of scope for a probing wrapper."""
        raise NotImplementedError("hidden_states does not support multi-round generation")
