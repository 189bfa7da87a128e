"""What the reference checkpoints are made of: encoder normalisations, and transformer shapes for compute estimates.

Shared data for the strategy modules (each strategy names its own normalisation and reference model when it
registers). Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

Normalisation = tuple[tuple[float, float, float], tuple[float, float, float]]  # (mean, std), RGB, 0..1 units

CLIP: Normalisation = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))  # OpenAI CLIP
SIGLIP: Normalisation = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # also transformers' IMAGENET_STANDARD_*
IMAGENET: Normalisation = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class TransformerSpec:
    """Shape of a transformer stack, enough for a FLOPs estimate."""

    name: str
    layers: int
    hidden: int  # d_model
    mlp: int  # MLP intermediate width (for a MoE: the width of the experts a token activates, summed)
    gated: bool  # SwiGLU-style MLP with three matrices (LLaMA, Qwen, Mistral) instead of two (ViT)
    patch: int = 0  # encoder patch side in pixels; 0 for a language model
    source: str = ""  # where the numbers come from

    def gflops(self, n: int) -> float:
        """Estimated forward GFLOPs (1e9, multiply-add = 2 FLOPs) for one sequence of ``n`` tokens.

        Per layer: ``2·n·(4·d² + k·d·mlp)`` for the projections (k = 3 for a gated MLP, 2 otherwise) plus
        ``4·n²·d`` for the attention scores and the weighted sum. Ignores grouped-query attention (K/V projections
        counted at full width), norms, embeddings and the LM head: an estimate, within a few per cent.
        """
        d = self.hidden
        k = 3 if self.gated else 2
        per_layer = 2 * n * (4 * d * d + k * d * self.mlp) + 4 * n * n * d
        return self.layers * per_layer / 1e9


@dataclass(frozen=True)
class ReferenceModel:
    """The checkpoint a strategy's defaults come from: its vision encoder and its language model."""

    encoder: TransformerSpec
    llm: TransformerSpec | None  # None: an encoder alone (NaViT)


CLIP_L_336 = TransformerSpec(
    "CLIP ViT-L/14-336", 24, 1024, 4096, False, patch=14,
    source="openai/clip-vit-large-patch14-336 config.json (vision_config)",
)
CLIP_L_224 = TransformerSpec(
    "CLIP ViT-L/14", 24, 1024, 4096, False, patch=14,
    source="openai/clip-vit-large-patch14 config.json (vision_config); mPLUG-Owl's ViT-L/14 has the same shape",
)
SIGLIP_SO400M = TransformerSpec(
    "SigLIP so400m/14", 27, 1152, 4304, False, patch=14,
    source="google/siglip-so400m-patch14-384 config.json (vision_config)",
)
INTERNVIT_300M = TransformerSpec(
    "InternViT-300M-448px", 24, 1024, 4096, False, patch=14,
    source="OpenGVLab/InternViT-300M-448px config.json",
)
QWEN2_VL_VIT = TransformerSpec(
    "Qwen2-VL ViT (675M)", 32, 1280, 5120, False, patch=14,
    source="Qwen/Qwen2-VL-7B-Instruct config.json (vision_config: depth 32, embed_dim 1280, mlp_ratio 4)",
)
VIT_B_16 = TransformerSpec(
    "ViT-B/16", 12, 768, 3072, False, patch=16,
    source="NaViT paper (Dehghani et al. 2023) B/16 shape; google/vit-base-patch16-224 config.json",
)

VICUNA_7B = TransformerSpec(
    "Vicuna-7B", 32, 4096, 11008, True, source="lmsys/vicuna-7b-v1.5 config.json (LLaMA-2-7B shape)",
)
VICUNA_13B = TransformerSpec(
    "Vicuna-13B", 40, 5120, 13824, True, source="lmsys/vicuna-13b-v1.5 config.json (LLaMA-2-13B shape)",
)
MISTRAL_7B = TransformerSpec(
    "Mistral-7B", 32, 4096, 14336, True, source="mistralai/Mistral-7B-Instruct-v0.2 config.json",
)
QWEN2_7B = TransformerSpec("Qwen2-7B", 28, 3584, 18944, True, source="Qwen/Qwen2-7B-Instruct config.json")
INTERNLM2_7B = TransformerSpec(
    "InternLM2.5-7B", 32, 4096, 14336, True, source="internlm/internlm2_5-7b-chat config.json (InternVL2.5-8B)",
)
LLAMA_7B = TransformerSpec("LLaMA-7B", 32, 4096, 11008, True, source="huggyllama/llama-7b config.json")
LLAMA3_8B = TransformerSpec("Llama-3.1-8B", 32, 4096, 14336, True, source="meta-llama/Llama-3.1-8B config.json")
SMOLLM2_1_7B = TransformerSpec(
    "SmolLM2-1.7B", 24, 2048, 8192, True, source="HuggingFaceTB/SmolLM2-1.7B-Instruct config.json",
)
DEEPSEEK_VL2_MOE = TransformerSpec(
    "DeepSeekMoE (DeepSeek-VL2, ~4.5B activated)", 30, 2560, 12288, True,
    source="deepseek-ai/deepseek-vl2 language_config: approximated as a dense model with the activated MLP "
    "(2 shared + 6 routed experts × 1536 = 12288); MLA attention counted as plain attention",
)

# Qwen family, Kimi-VL, Fuyu (appended with families-2)
QWEN2_5_VL_VIT = TransformerSpec(
    "Qwen2.5-VL ViT (window attention)", 32, 1280, 3420, True, patch=14,
    source="Qwen/Qwen2.5-VL-7B-Instruct config.json (vision_config: depth 32, hidden_size 1280, intermediate_size "
    "3420, SwiGLU); the 7B LLM (Qwen2.5-7B) has QWEN2_7B's shape",
)
QWEN3_VL_VIT = TransformerSpec(
    "Qwen3-VL ViT", 27, 1152, 4304, False, patch=16,
    source="transformers Qwen3VLVisionConfig defaults (depth 27, hidden_size 1152, intermediate_size 4304, patch 16)",
)
QWEN3_8B = TransformerSpec("Qwen3-8B", 36, 4096, 12288, True, source="Qwen/Qwen3-8B config.json (Qwen3-VL-8B's LLM)")
GLM4V_VIT = TransformerSpec(
    "GLM-4.1V ViT", 24, 1536, 13696, True, patch=14,
    source="transformers Glm4vVisionConfig defaults (depth 24, hidden_size 1536, intermediate_size 13696, SiLU GLU)",
)
GLM4_9B = TransformerSpec(
    "GLM-4-9B", 40, 4096, 13696, True, source="transformers Glm4vTextConfig defaults (GLM-4.1V-9B's LLM)",
)
PADDLEOCR_VL_VIT = TransformerSpec(
    "PaddleOCR-VL ViT (SigLIP-style)", 27, 1152, 4304, False, patch=14,
    source="transformers PaddleOCRVLConfig vision_config defaults (27 layers, hidden 1152, intermediate 4304)",
)
ERNIE_4_5_0_3B = TransformerSpec(
    "ERNIE-4.5-0.3B", 18, 1024, 3072, True, source="transformers PaddleOCRVLConfig text_config defaults",
)
MOONVIT = TransformerSpec(
    "MoonViT", 27, 1152, 4304, False, patch=14,
    source="transformers models/kimi_k25/configuration_kimi_k25.py vision defaults (27 layers, hidden 1152, 4304)",
)
MOONLIGHT_A3B = TransformerSpec(
    "Moonlight-16B-A3B (Kimi-VL's LLM, ~3B activated)", 27, 2048, 11264, True,
    source="moonshotai/Kimi-VL-A3B-Instruct text_config as published (hidden 2048, 27 layers, 2 shared + 6 routed "
    "experts × 1408 = 11264 activated): approximated as a dense model with the activated MLP; not re-checked here",
)
FUYU_PATCH_PROJECTION = TransformerSpec(
    "Fuyu linear patch projection (no vision transformer)", 0, 4096, 0, False, patch=30,
    source="transformers FuyuConfig: 30×30 patches go through one linear layer into the decoder; no encoder layers",
)
PERSIMMON_8B = TransformerSpec(
    "Persimmon-8B (Fuyu-8B decoder)", 36, 4096, 16384, False,
    source="transformers FuyuConfig text_config defaults (36 layers, hidden 4096, intermediate 16384, relu²)",
)
PHI4_MINI = TransformerSpec(
    "Phi-4-mini (3.8B)", 32, 3072, 8192, True,
    source="microsoft/Phi-4-multimodal-instruct text config (transformers Phi4MultimodalConfig defaults: "
    "32 layers, hidden 3072, intermediate 8192)",
)
PHI35_MINI = TransformerSpec(
    "Phi-3.5-mini (3.8B)", 32, 3072, 8192, True,
    source="microsoft/Phi-3.5-vision-instruct config.json (Phi-3-mini shape: 32 layers, hidden 3072, "
    "intermediate 8192)",
)
SIGLIP2_NAFLEX_400M = TransformerSpec(
    "SigLIP2 so400m/16 NaFlex", 27, 1152, 4304, False, patch=16,
    source="google/siglip2-so400m-patch16-naflex config.json (vision_config); LiquidAI/LFM2-VL-1.6B's encoder "
    "(layer count as published for so400m, not verified against the LFM2-VL checkpoint)",
)
LFM2_1_2B = TransformerSpec(
    "LFM2-1.2B", 16, 2048, 8192, True,
    source="LiquidAI/LFM2-1.2B config.json (16 blocks: 10 short-conv + 6 attention, all counted as attention; "
    "hidden 2048; block_ff_dim 12288 auto-adjusted to 8192); not verified here",
)
MOLMO2_VIT = TransformerSpec(
    "Molmo2 ViT (SigLIP2 so400m/14, 25 layers)", 25, 1152, 4304, False, patch=14,
    source="transformers Molmo2VitConfig defaults for allenai/Molmo2-8B (hidden 1152, intermediate 4304, "
    "25 layers, patch 14)",
)
# --- gemma3 / gemma4 / paligemma / pixtral / mistral3 / idefics2 (fam-f3)
GEMMA3_4B = TransformerSpec(
    "Gemma-3-4B", 34, 2560, 10240, True, source="google/gemma-3-4b-it config.json (text_config)",
)
GEMMA4_VISION = TransformerSpec(
    "Gemma 4 vision encoder", 16, 768, 3072, True, patch=16,
    source="transformers 5.23 models/gemma4/configuration_gemma4.py Gemma4VisionConfig class defaults",
)
GEMMA4_TEXT = TransformerSpec(
    "Gemma 4 text model", 30, 2304, 9216, True,
    source="transformers 5.23 models/gemma4/configuration_gemma4.py Gemma4TextConfig class defaults",
)
GEMMA_2B = TransformerSpec(
    "Gemma-2B", 18, 2048, 16384, True,
    source="transformers 5.23 models/paligemma/configuration_paligemma.py default text_config (google/gemma-2b)",
)
PIXTRAL_VIT = TransformerSpec(
    "Pixtral-ViT (400M)", 24, 1024, 4096, True, patch=16,
    source="transformers 5.23 models/pixtral/configuration_pixtral.py class defaults (mistral-community/pixtral-12b)",
)
MISTRAL_NEMO_12B = TransformerSpec(
    "Mistral-NeMo-12B", 40, 5120, 14336, True, source="mistralai/Mistral-Nemo-Instruct-2407 config.json",
)
MISTRAL3_VIT = TransformerSpec(
    "Pixtral-ViT at 1540 px, patch 14", 24, 1024, 4096, True, patch=14,
    source="transformers 5.23 models/mistral3/configuration_mistral3.py default vision_config",
)
MISTRAL_SMALL_24B = TransformerSpec(
    "Mistral-Small-3.1-24B", 40, 5120, 32768, True,
    source="mistralai/Mistral-Small-3.1-24B-Instruct-2503 config.json (text_config)",
)
AIMV2_HUGE_448 = TransformerSpec(
    "AIMv2-Huge/14-448", 24, 1536, 4096, True, patch=14,
    source="apple/aimv2-huge-patch14-448 config.json (hidden 1536, intermediate 4096, 24 layers, SwiGLU); "
    "the visual backbone of AIDC-AI/Ovis2-8B",
)
SAM_VIT_B_16 = TransformerSpec(
    "SAM ViT-B/16 (DeepEncoder)", 12, 768, 3072, False, patch=16,
    source="deepseek-ai/DeepSeek-OCR deepencoder/sam_vary_sdpa.py build_sam_vit_b (embed 768, depth 12); "
    "the CLIP-L stage that follows runs on 16× fewer tokens and is not counted",
)
DEEPSEEK_3B_MOE = TransformerSpec(
    "DeepSeek3B-MoE (DeepSeek-OCR, ~570M activated)", 12, 1280, 7168, True,
    source="deepseek-ai/DeepSeek-OCR config.json language_config: approximated as a dense model with the "
    "activated MLP (2 shared + 6 routed experts × 896 = 7168)",
)
MLLAMA_VIT = TransformerSpec(
    "Mllama ViT-H/14 (32 + 8 global layers)", 40, 1280, 5120, False, patch=14,
    source="meta-llama/Llama-3.2-11B-Vision config.json (vision_config: num_hidden_layers 32, num_global_layers 8, "
    "hidden_size 1280, intermediate_size 5120)",
)
LLAMA4_VIT = TransformerSpec(
    "Llama 4 vision encoder", 34, 1408, 5632, False, patch=14,
    source="meta-llama/Llama-4-Scout-17B-16E-Instruct config.json (vision_config: 34 layers, hidden 1408, "
    "intermediate 5632)",
)
LLAMA4_SCOUT = TransformerSpec(
    "Llama 4 Scout (17B activated)", 48, 5120, 16384, True,
    source="meta-llama/Llama-4-Scout-17B-16E-Instruct config.json (text_config: 48 layers, hidden 5120): "
    "approximated as a dense model with the activated MLP (1 routed expert 8192 + shared expert 8192)",
)
SIGLIP2_SO400M_16 = TransformerSpec(
    "SigLIP2 so400m/16-512", 27, 1152, 4304, False, patch=16,
    source="google/siglip2-so400m-patch16-512 config.json (vision_config); Command A Vision's encoder",
)
AYA_EXPANSE_8B = TransformerSpec(
    "Aya Expanse 8B (Cohere2)", 32, 4096, 14336, True,
    source="CohereLabs/aya-vision-8b config.json (text_config)",
)
COMMAND_A = TransformerSpec(
    "Command A (111B, Cohere2)", 64, 12288, 36864, True,
    source="CohereLabs/command-a-vision-07-2025 config.json (text_config)",
)
PE_G_14 = TransformerSpec(
    "Perception Encoder G/14-448", 50, 1536, 8960, False, patch=14,
    source="Bolya et al. 2025, Perception Encoder, Table of model shapes (PE G/14: 50 layers, width 1536, "
    "MLP 8960); PLM-8B's encoder — not checked against a checkpoint config",
)
