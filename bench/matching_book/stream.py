"""A seeded, engine-independent command stream and the trades it must produce.

The generator keeps its own minimal shadow book (price -> FIFO of [id, qty]) so that it
can (a) cancel only live orders, (b) size aggressive orders to sweep exactly 1-3 levels
and (c) state the expected trades. It shares no code with any engine.

Ops are tuples ``(kind, idx, is_buy, price, quantity, sid)``: ``kind`` is NEW, CANCEL or
TAKE; ``idx`` an int order id (``sid`` the same as a string). Passive orders never
cross (bids below ``MID``, asks above), aggressive ones are fully filled, so every
engine, whatever its order types, must print the same trades.
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field

NEW, CANCEL, TAKE = 0, 1, 2
MID = 100_000  # price in ticks (fen), tick 1
MAX_OFFSET = 400

Op = tuple[int, int, bool, int, int, str]
ExpectedTrade = tuple[int, int, int, int]  # maker idx, taker idx, price, quantity


@dataclass
class Stream:
    preload: list[Op]
    ops: list[Op]
    trades: list[ExpectedTrade]
    resting_after_preload: int
    resting_at_end: int
    levels_at_end: int
    live_at_end: list[int]
    mix: dict[str, int] = field(default_factory=dict)


class _Shadow:
    def __init__(self) -> None:
        self.levels: dict[bool, dict[int, deque[list[int]]]] = {True: {}, False: {}}
        # Ascending prices per side; best bid is last, best ask first.
        self.prices: dict[bool, list[int]] = {True: [], False: []}
        self.where: dict[int, tuple[bool, int]] = {}
        self.live: list[int] = []
        self.pos: dict[int, int] = {}

    def add(self, idx: int, is_buy: bool, price: int, qty: int) -> None:
        book = self.levels[is_buy]
        if price not in book:
            book[price] = deque()
            insort(self.prices[is_buy], price)
        book[price].append([idx, qty])
        self.where[idx] = (is_buy, price)
        self.pos[idx] = len(self.live)
        self.live.append(idx)

    def _forget(self, idx: int) -> None:
        del self.where[idx]
        i = self.pos.pop(idx)
        last = self.live.pop()
        if last != idx:
            self.live[i] = last
            self.pos[last] = i

    def _drop_level_if_empty(self, is_buy: bool, price: int) -> None:
        if not self.levels[is_buy][price]:
            del self.levels[is_buy][price]
            prices = self.prices[is_buy]
            del prices[bisect_left(prices, price)]

    def cancel(self, idx: int) -> None:
        is_buy, price = self.where[idx]
        queue = self.levels[is_buy][price]
        for entry in queue:
            if entry[0] == idx:
                queue.remove(entry)
                break
        self._forget(idx)
        self._drop_level_if_empty(is_buy, price)

    def best_levels(self, is_buy: bool, n: int) -> list[int]:
        prices = self.prices[is_buy]
        return list(reversed(prices[-n:])) if is_buy else prices[:n]

    def take(self, taker: int, taker_buys: bool, qty: int, out: list[ExpectedTrade]) -> None:
        maker_side = not taker_buys
        while qty:
            price = self.best_levels(maker_side, 1)[0]
            queue = self.levels[maker_side][price]
            entry = queue[0]
            fill = min(qty, entry[1])
            out.append((entry[0], taker, price, fill))
            qty -= fill
            entry[1] -= fill
            if entry[1] == 0:
                queue.popleft()
                self._forget(entry[0])
            self._drop_level_if_empty(maker_side, price)


def _passive(rng: random.Random, shadow: _Shadow, idx: int, scale: float) -> Op:
    """A non-crossing limit order, most often near the touch of its own side."""
    is_buy = rng.random() < 0.5
    own = shadow.best_levels(is_buy, 1)
    other = shadow.best_levels(not is_buy, 1)
    step = min(MAX_OFFSET, int(rng.expovariate(1.0 / scale)))
    if is_buy:
        ref = own[0] if own else (other[0] - 1 if other else MID)
        price = ref + 1 - step
        if other:
            price = min(price, other[0] - 1)
    else:
        ref = own[0] if own else (other[0] + 1 if other else MID)
        price = ref - 1 + step
        if other:
            price = max(price, other[0] + 1)
    qty = rng.randint(1, 100)
    shadow.add(idx, is_buy, price, qty)
    return (NEW, idx, is_buy, price, qty, f"o{idx}")


def generate(
    n_ops: int, seed: int = 20260302, n_preload: int = 1000, scale: float = 200.0
) -> Stream:
    rng = random.Random(seed)
    shadow = _Shadow()
    trades: list[ExpectedTrade] = []
    preload = [_passive(rng, shadow, i, scale) for i in range(n_preload)]
    resting_after_preload = len(shadow.live)
    ops: list[Op] = []
    mix = {"new": 0, "cancel": 0, "take": 0}
    idx = n_preload
    while len(ops) < n_ops:
        r = rng.random()
        if r < 0.30 and shadow.live:
            victim = shadow.live[rng.randrange(len(shadow.live))]
            is_buy, price = shadow.where[victim]
            shadow.cancel(victim)
            ops.append((CANCEL, victim, is_buy, price, 0, f"o{victim}"))
            mix["cancel"] += 1
            continue
        if r < 0.40:
            taker_buys = rng.random() < 0.5
            maker_side = not taker_buys
            want = rng.randint(1, 3)
            levels = shadow.best_levels(maker_side, want)
            if levels:
                book = shadow.levels[maker_side]
                totals = [sum(e[1] for e in book[p]) for p in levels]
                qty = sum(totals[:-1]) + rng.randint(1, totals[-1])
                limit = levels[-1]
                op = (TAKE, idx, taker_buys, limit, qty, f"o{idx}")
                shadow.take(idx, taker_buys, qty, trades)
                ops.append(op)
                mix["take"] += 1
                idx += 1
                continue
        ops.append(_passive(rng, shadow, idx, scale))
        mix["new"] += 1
        idx += 1
    return Stream(
        preload,
        ops,
        trades,
        resting_after_preload,
        len(shadow.live),
        len(shadow.levels[True]) + len(shadow.levels[False]),
        sorted(shadow.live),
        mix,
    )
