"""Reference models for every architecture family dlkernels serves, each with a torch.nn twin.

    model = dlkernels.models.resnet50(backend="triton")      # dlkernels.nn modules (our kernels)
    twin = dlkernels.models.resnet50(impl="torch")           # torch.nn modules only, identical state_dict keys
    model.load_state_dict(twin.state_dict())

MODEL_TABLE says, per model, which layers run dlkernels ops and which run torch's; print_model_table() prints it.
SPECS (dlkernels.models.registry) holds each model's small test configuration and inputs.
"""
from dlkernels.models.cnn import (VGG, AlexNet, CifarBNCNN, GoogLeNet, LeNet5, MnistCNN, ResNet, googlenet, resnet18,
                                  resnet34, resnet50, vgg11, vgg11_bn, vgg16, vgg16_bn)
from dlkernels.models.diffusion import DDPM, ConvDenoiser, UNet
from dlkernels.models.gan import (DCGANDiscriminator, DCGANGenerator, DoubleBackwardUnsupported, MLPDiscriminator,
                                  MLPGenerator, WGANGPCritic, wgan_gp_penalty_backward)
from dlkernels.models.rnn import CharLSTM, RowGRU, RowLSTM, RowRNN
from dlkernels.models.transformer import BERT, GPT, TransformerLM, ViT

_CONV = "Conv2d"
_CONV_RELU = "Conv2d+ReLU (fused epilogue)"
_CONV_LEAKY = "Conv2d+LeakyReLU(0.2) (fused epilogue)"
_BN_RELU = "BatchNorm2d+ReLU (fused)"
_BN_ADD_RELU = "BatchNorm2d+add+ReLU (fused, every residual block)"
_MAXPOOL, _AVGPOOL, _ADAPTIVE = "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"
_MHA = "MultiheadAttention (flash attention core)"
_SDPA = "scaled_dot_product_attention (flash, causal)"

# model -> {"dlkernels": layers on our ops, "torch": layers on torch's ops}
MODEL_TABLE: dict[str, dict[str, list[str]]] = {
    "MnistCNN": {"dlkernels": [_CONV_RELU, _MAXPOOL], "torch": ["Linear", "ReLU (after Linear)", "Dropout"]},
    "CifarBNCNN": {"dlkernels": [_CONV_RELU, "BatchNorm2d", _MAXPOOL], "torch": ["Linear", "ReLU (after Linear)",
                                                                             "Dropout"]},
    "LeNet5": {"dlkernels": [_CONV + " (+ReLU fused when activation='relu')", _AVGPOOL],
               "torch": ["Tanh (activation='tanh')", "Linear", "Tanh/ReLU after Linear"]},
    "AlexNet": {"dlkernels": [_CONV_RELU, _MAXPOOL, _ADAPTIVE], "torch": ["Linear", "ReLU (after Linear)", "Dropout"]},
    "VGG-11/16": {"dlkernels": [_CONV_RELU, _MAXPOOL, _ADAPTIVE], "torch": ["Linear", "ReLU (after Linear)",
                                                                            "Dropout"]},
    "VGG-11/16-BN": {"dlkernels": [_CONV, _BN_RELU, _MAXPOOL, _ADAPTIVE],
                     "torch": ["Linear", "ReLU (after Linear)", "Dropout"]},
    "GoogLeNet": {"dlkernels": [_CONV, _BN_RELU, _MAXPOOL + " (ceil_mode)", _ADAPTIVE],
                  "torch": ["torch.cat (branches)", "Linear", "ReLU (aux fc)", "Dropout"]},
    "ResNet-18/34/50": {"dlkernels": [_CONV, _BN_RELU, _BN_ADD_RELU, "BatchNorm2d (downsample)", _MAXPOOL, _ADAPTIVE],
                        "torch": ["Linear"]},
    "RowLSTM / RowGRU": {"dlkernels": ["LSTM / GRU (recurrence; input projection and weight gradients are torch "
                                       "GEMMs inside the op)"], "torch": ["Linear"]},
    "CharLSTM": {"dlkernels": ["LSTM"], "torch": ["Embedding", "Dropout", "Linear"]},
    "MLP GAN (G and D)": {"dlkernels": [], "torch": ["Linear", "ReLU", "LeakyReLU", "Tanh", "Sigmoid"]},
    "DCGAN G (64, 32)": {"dlkernels": ["ConvTranspose2d", _BN_RELU], "torch": ["Tanh"]},
    "DCGAN D (64, 32)": {"dlkernels": ["strided " + _CONV_LEAKY, "strided Conv2d", "BatchNorm2d+LeakyReLU(0.2) "
                                       "(fused)", _CONV + " (head)"], "torch": ["Sigmoid"]},
    "WGAN-GP critic": {"dlkernels": ["strided " + _CONV_LEAKY + " (forward, backward and the penalty's double "
                                     "backward)", _CONV + " (head)"], "torch": []},
    "TransformerLM": {"dlkernels": [_MHA + " (causal)"],
                      "torch": ["Embedding", "positional encoding", "Linear (QKV, out, FFN, decoder)", "LayerNorm",
                                "ReLU", "Dropout", "log_softmax"]},
    "GPT": {"dlkernels": [_SDPA], "torch": ["Embedding", "Linear", "LayerNorm", "GELU", "Dropout"]},
    "BERT": {"dlkernels": ["attention (varlen flash attention over packed valid tokens)"],
             "torch": ["Embedding", "Linear", "LayerNorm", "GELU", "Dropout", "pack/unpack (index)"]},
    "ViT": {"dlkernels": [_CONV + " (16x16 stride-16 patch embedding)", _MHA],
            "torch": ["Linear", "LayerNorm", "GELU", "Dropout", "class token / positions"]},
    "ConvDenoiser": {"dlkernels": [_CONV_RELU, _CONV], "torch": ["t/1000 scaling"]},
    "DDPM UNet": {"dlkernels": [_CONV, "Conv2d + residual add (fused epilogue)", "scaled_dot_product_attention"],
                  "torch": ["GroupNorm", "SiLU", "Linear (time MLP)", "nearest upsample", "torch.cat (skips)",
                            "DDPM loss and sampling arithmetic"]},
}


def model_table_markdown() -> str:
    lines = ["| model | dlkernels ops | torch ops |", "|---|---|---|"]
    for name, row in MODEL_TABLE.items():
        lines.append(f"| {name} | {', '.join(row['dlkernels']) or '(none)'} | {', '.join(row['torch']) or '(none)'} |")
    return "\n".join(lines)


def print_model_table() -> None:
    print(model_table_markdown())


__all__ = ["BERT", "DDPM", "GPT", "MODEL_TABLE", "VGG", "AlexNet", "CharLSTM", "CifarBNCNN", "ConvDenoiser",
           "DCGANDiscriminator", "DCGANGenerator", "DoubleBackwardUnsupported", "GoogLeNet", "LeNet5", "MLPDiscriminator",
           "MLPGenerator", "MnistCNN", "ResNet", "RowGRU", "RowLSTM", "RowRNN", "TransformerLM", "UNet", "ViT",
           "WGANGPCritic", "googlenet", "model_table_markdown", "print_model_table", "resnet18", "resnet34",
           "resnet50", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "wgan_gp_penalty_backward"]
