"""Training objectives for the seed network beyond Keras' built-in losses.

Sampled softmax: for each observed (user, artist) pair, the artist must out-score a shared set of
uniformly sampled artists, through a softmax cross-entropy. This optimises the ranking of the
whole catalogue (what NDCG measures) far more directly than pointwise binary cross-entropy.
Scoring a batch of users against the shared negatives uses the split first Dense layer
(see :class:`training.models.network.CatalogueScorer`): the network is unchanged, only the way
its loss is computed.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from training.models.network import ARTIST_EMBEDDING, HIDDEN, OUTPUT_LAYER, USER_EMBEDDING


class SampledSoftmax:
    """One optimiser step = one batch of positives against ``negatives`` shared samples."""

    def __init__(
        self, model: keras.Model, learning_rate: float, negatives: int, embedding_l2: float = 0.0
    ) -> None:
        self.users_table = model.get_layer(USER_EMBEDDING).embeddings
        self.artists_table = model.get_layer(ARTIST_EMBEDDING).embeddings
        hidden, output = model.get_layer(HIDDEN), model.get_layer(OUTPUT_LAYER)
        self.kernel, self.bias = hidden.kernel, hidden.bias
        self.out_kernel, self.out_bias = output.kernel, output.bias
        self.variables = [
            self.users_table, self.artists_table, self.kernel, self.bias,
            self.out_kernel, self.out_bias,
        ]  # fmt: skip
        self.dim = int(self.users_table.shape[1])
        self.n_artists = int(self.artists_table.shape[0])
        self.negatives = negatives
        self.embedding_l2 = embedding_l2
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.variables)
        self._step = tf.function(self._step_impl, jit_compile=True, reduce_retracing=True)

    def _logits(self, users: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
        """Network scores of every user against every candidate artist: (B, C)."""
        user_half = tf.gather(self.users_table, users) @ self.kernel[: self.dim]
        artist_half = tf.gather(self.artists_table, candidates) @ self.kernel[self.dim :]
        hidden = tf.nn.relu(user_half[:, None, :] + (artist_half + self.bias)[None, :, :])
        return tf.einsum("bch,h->bc", hidden, self.out_kernel[:, 0]) + self.out_bias[0]

    def _step_impl(self, users: tf.Tensor, positives: tf.Tensor, negatives: tf.Tensor):
        with tf.GradientTape() as tape:
            user_rows = tf.gather(self.users_table, users)
            pos_rows = tf.gather(self.artists_table, positives)
            user_half = user_rows @ self.kernel[: self.dim]
            pos_half = pos_rows @ self.kernel[self.dim :]
            pos = tf.nn.relu(user_half + pos_half + self.bias) @ self.out_kernel
            pos = pos[:, 0] + self.out_bias[0]
            neg = self._logits(users, negatives)
            # A sampled negative that is the positive itself is no negative: mask it out.
            neg = tf.where(negatives[None, :] == positives[:, None], -1e9, neg)
            logits = tf.concat([pos[:, None], neg], axis=1)
            loss = tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - pos)
            # L2 on the embedding rows this batch touches (the usual recommender weight decay).
            penalty = tf.reduce_sum(user_rows**2, axis=1) + tf.reduce_sum(pos_rows**2, axis=1)
            loss += self.embedding_l2 * tf.reduce_mean(penalty)
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        return loss

    def epoch(
        self, users: np.ndarray, artists: np.ndarray, batch_size: int, rng: np.random.Generator
    ) -> float:
        """One pass over the (user, artist) positives in random order; returns the mean loss."""
        order = rng.permutation(len(users))
        losses = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            negatives = rng.integers(0, self.n_artists, self.negatives, dtype=np.int32)
            losses.append(float(self._step(users[idx], artists[idx], negatives)))
        return float(np.mean(losses))
