"""Drop-in modules: torch.nn's constructor arguments and state_dict keys, plus keyword `backend`."""
from dlkernels.nn.attention import MultiheadAttention
from dlkernels.nn.batch_norm import BatchNormAddReLU2d, BatchNormReLU2d, SyncBatchNormAddReLU2d, SyncBatchNormReLU2d
from dlkernels.nn.conv import Conv2d, ConvTranspose2d
from dlkernels.nn.rnn import GRU, LSTM, GRUCell, LSTMCell
from dlkernels.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "BatchNormAddReLU2d", "BatchNormReLU2d", "Conv2d", "ConvTranspose2d", "GRU", "GRUCell", "LSTM", "LSTMCell", "MaxPool2d",
           "MultiheadAttention", "SyncBatchNormAddReLU2d", "SyncBatchNormReLU2d"]
