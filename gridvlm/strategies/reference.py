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
SAM_VIT_B = TransformerSpec(
    "SAM ViT-B/16 (DeepEncoder's first stage)", 12, 768, 3072, False, patch=16,
    source="DeepSeek-OCR paper (Wei et al. 2025) §3.2: SAM-base with 16-px patches; SAM ViT-B shape "
    "(facebook/sam-vit-base vision_config: 12 layers, hidden 768, mlp 3072)",
)
DEEPSEEK_3B_MOE = TransformerSpec(
    "DeepSeek-3B-MoE (~570M activated)", 12, 1280, 7168, True,
    source="deepseek-ai/DeepSeek-OCR config.json language_config (12 layers, hidden 1280, 6 routed + 2 shared "
    "experts × moe_intermediate 896): approximated as a dense model with the activated MLP (8 × 896 = 7168)",
)
PE_G_14 = TransformerSpec(
    "Perception Encoder G/14-448", 50, 1536, 8960, False, patch=14,
    source="Bolya et al. 2025, Perception Encoder, Table of model shapes (PE G/14: 50 layers, width 1536, "
    "MLP 8960); PLM-8B's encoder — not checked against a checkpoint config",
)
