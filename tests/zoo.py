"""Real-world-shaped models for `vanishing.watch`, written here in the shape of the originals (no
downloads, no torchvision or transformers): PyTorch's MNIST example, a small ResNet, nanoGPT
(pre-norm, tied embeddings, GPT-2's gelu_new), a BERT-style post-norm encoder with a pooler, the
word_language_model's 2-layer LSTM; and a deep sigmoid conv stack built to fail. `train` runs
a user's loop on synthetic data (optionally with the loop's own clip_grad_norm_)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class MnistNet(nn.Module):
    """pytorch/examples mnist/main.py's Net, channels scaled by `width` (32 and 64 there)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(2 * width * 12 * 12, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: Tensor) -> Tensor:  # (batch, 1, 28, 28)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: conv-bn-relu-conv-bn, plus the shortcut, then relu."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A small torchvision-shaped ResNet: conv1/bn1/relu stem, layer1..layer2, avgpool, fc."""

    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(
            BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: Tensor) -> Tensor:  # (batch, 3, 16, 16)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class NewGELUActivation(nn.Module):
    """GPT-2's gelu_new (Hugging Face's class of that name): GELU's tanh approximation."""

    def forward(self, x: Tensor) -> Tensor:
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))
        return 0.5 * x * (1.0 + torch.tanh(inner))


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 16
    vocab_size: int = 32
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head

    def forward(self, x: Tensor) -> Tensor:  # (batch, time, n_embd)
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class GPTMLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = NewGELUActivation()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    """nanoGPT's pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = GPTMLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's GPT: wte, wpe, blocks, ln_f and lm_head, whose weight is wte's (tied)."""

    def __init__(self, config: GPTConfig | None = None) -> None:
        super().__init__()
        config = config or GPTConfig()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(0.0),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT writes it
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def forward(self, idx: Tensor) -> Tensor:  # (batch, time) -> (batch, time, vocab)
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


class GELUActivation(nn.Module):
    """Hugging Face's GELUActivation: F.gelu inside a module's forward."""

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x)


class BertLayer(nn.Module):
    """BERT's post-norm layer, with Hugging Face's module names."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query = nn.Linear(hidden, hidden)
        self.attention.self.key = nn.Linear(hidden, hidden)
        self.attention.self.value = nn.Linear(hidden, hidden)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(hidden, hidden)
        self.attention.output.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(hidden, 4 * hidden)
        self.intermediate.intermediate_act_fn = GELUActivation()
        self.output = nn.Module()
        self.output.dense = nn.Linear(4 * hidden, hidden)
        self.output.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:  # (batch, time, hidden)
        b, t, c = x.shape
        attention = self.attention.self
        q, k, v = (
            layer(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)
            for layer in (attention.query, attention.key, attention.value)
        )
        context = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, c)
        x = self.attention.output.LayerNorm(self.attention.output.dense(context) + x)
        h = self.intermediate.intermediate_act_fn(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dense(h) + x)


class Bert(nn.Module):
    """bert.embeddings, bert.encoder.layer.N, bert.pooler (dense + tanh on [CLS]), classifier."""

    def __init__(self, vocab: int = 32, hidden: int = 32, layers: int = 2, length: int = 16):
        super().__init__()
        self.bert = nn.Module()
        self.bert.embeddings = nn.Module()
        self.bert.embeddings.word_embeddings = nn.Embedding(vocab, hidden)
        self.bert.embeddings.position_embeddings = nn.Embedding(length, hidden)
        self.bert.embeddings.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.bert.encoder = nn.Module()
        self.bert.encoder.layer = nn.ModuleList([BertLayer(hidden, 2) for _ in range(layers)])
        self.bert.pooler = nn.Module()
        self.bert.pooler.dense = nn.Linear(hidden, hidden)
        self.bert.pooler.activation = nn.Tanh()
        self.classifier = nn.Linear(hidden, 2)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, ids: Tensor) -> Tensor:  # (batch, time) -> (batch, 2)
        embeddings = self.bert.embeddings
        pos = torch.arange(ids.size(1), device=ids.device)
        x = embeddings.LayerNorm(
            embeddings.word_embeddings(ids) + embeddings.position_embeddings(pos)
        )
        for layer in self.bert.encoder.layer:
            x = layer(x)
        pooled = self.bert.pooler.activation(self.bert.pooler.dense(x[:, 0]))
        return self.classifier(pooled)


class RNNModel(nn.Module):
    """word_language_model's RNNModel: encoder, a 2-layer nn.LSTM (time first), decoder."""

    def __init__(self, ntoken: int = 32, ninp: int = 32, nhid: int = 32, nlayers: int = 2):
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=0.2)
        self.decoder = nn.Linear(nhid, ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        self.ntoken = ntoken

    def forward(self, x: Tensor, hidden: tuple[Tensor, Tensor] | None = None) -> Tensor:
        emb = self.drop(self.encoder(x))  # (time, batch, ninp)
        output, _ = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1)


class SigmoidConvStack(nn.Module):
    """Built to fail: 8 sigmoid convs on a 16 x 16 map, then an fc head."""

    def __init__(self, depth: int = 8, width: int = 4) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(1 if i == 0 else width, width, 3, 1, 1) for i in range(depth)]
        )
        self.act = nn.Sigmoid()
        self.fc = nn.Linear(width * 8 * 8, 10)

    def forward(self, x: Tensor) -> Tensor:  # (batch, 1, 16, 16)
        for conv in self.convs:
            x = self.act(conv(x))
        return self.fc(torch.flatten(F.max_pool2d(x, 2), 1))


def images(n: int, channels: int, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Ten fixed random templates plus noise: a task a conv net learns in a few dozen steps."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.randn(10, channels, size, size, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return templates[y] + torch.randn(n, channels, size, size, generator=generator), y


def tokens(n: int, length: int, vocab: int = 32, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Sequences that count up modulo `vocab` from a random start: the next token is learnable."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab, (n, 1), generator=generator)
    return (start + torch.arange(length + 1)) % vocab, start.squeeze(1) % 2


@dataclass(frozen=True)
class Case:
    """A zoo model, its data and its loss: `batch(step)` gives (inputs, targets)."""

    name: str
    make: Callable[[], nn.Module]
    data: Callable[[], tuple[Tensor, Tensor]]
    loss: Callable[[nn.Module, Tensor, Tensor], Tensor]
    lr: float = 1e-3


def classify(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y)


def next_token(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    logits = model(x[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))


def lstm_next_token(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    sequence = x.t()  # (time, batch), as word_language_model batches
    return F.nll_loss(model(sequence[:-1]), sequence[1:].reshape(-1))


CASES = {
    "mnist": Case("mnist", lambda: MnistNet(4), lambda: images(256, 1, 28), classify),
    "resnet": Case("resnet", ResNet, lambda: images(256, 3, 16), classify),
    "gpt": Case("gpt", GPT, lambda: tokens(256, 16), next_token),
    "bert": Case("bert", Bert, lambda: tokens(256, 15), lambda m, x, y: classify(m, x, y)),
    "lstm": Case("lstm", RNNModel, lambda: tokens(256, 12), lstm_next_token, lr=3e-3),
    "sigmoid-stack": Case("sigmoid-stack", SigmoidConvStack, lambda: images(256, 1, 16), classify),
}


def train(
    case: Case,
    steps: int,
    watched: Callable[[nn.Module, torch.optim.Optimizer], object] | None = None,
    clip: float | None = None,
    seed: int = 0,
    after_step: Callable[[nn.Module], object] | None = None,
) -> tuple[nn.Module, list[float]]:
    """A user's loop: Adam, batches of 32, optionally the loop's own clip_grad_norm_ and
    something done with the model after each step (torch.save, a copy); `watched` (model,
    optimizer) is entered around the loop when given. Returns the model and its losses."""
    torch.manual_seed(seed)
    model = case.make()
    optimizer = torch.optim.Adam(model.parameters(), lr=case.lr)
    x, y = case.data()
    generator = torch.Generator().manual_seed(seed + 1)
    losses: list[float] = []
    watch = watched(model, optimizer) if watched is not None else None
    try:
        for _ in range(steps):
            batch = torch.randint(0, len(x), (32,), generator=generator)
            optimizer.zero_grad()
            loss = case.loss(model, x[batch], y[batch])
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            losses.append(loss.item())
            if after_step is not None:
                after_step(model)
    finally:
        if watch is not None:
            watch.close()  # type: ignore[attr-defined]
    return model, losses
