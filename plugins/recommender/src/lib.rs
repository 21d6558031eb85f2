//! A matrix-factorization recommender trained by `train.py` (BPR on a
//! synthetic implicit-feedback data set).
//!
//! Input `user_id`: INT64 [-1], a batch of user ids (`0..users`).
//! Request parameter `k`: how many items to return per user (integer,
//! default 10, `1..=items`).
//! Outputs `items`: INT64 [-1, k], the best items first, and `scores`:
//! FP32 [-1, k], their scores.
//!
//! A user's score for item `i` is `user_factors[user] · item_factors[i] +
//! item_bias[i]`; for the whole batch that is one `[n, d] · [items, d]ᵀ`
//! product with the bias added as it is written (`linear_t`) on the host,
//! then the host's `top_k` along the item axis.

use edgeserve_sdk::{
    Error, InferError, Model, ModelMetadata, Output, Request, Tensor, TensorSpec, export_model,
    model,
};

/// Items returned per user when the request does not say.
const DEFAULT_K: u32 = 10;

struct Recommender {
    /// [users, d]
    user_factors: Tensor,
    /// [items, d]
    item_factors: Tensor,
    /// [items]
    item_bias: Tensor,
    users: u32,
    items: u32,
}

impl Model for Recommender {
    fn metadata() -> ModelMetadata {
        ModelMetadata {
            inputs: vec![TensorSpec::new("user_id", "INT64", &[-1])],
            outputs: vec![
                TensorSpec::new("items", "INT64", &[-1, -1]),
                TensorSpec::new("scores", "FP32", &[-1, -1]),
            ],
        }
    }

    fn init() -> Result<Self, String> {
        let (user_factors, users) = model::weight_2d("user_factors")?;
        let (item_factors, items) = model::weight_2d("item_factors")?;
        let item_bias = model::weight("item_bias")?;
        let bias = item_bias.shape();
        if users[1] != items[1] {
            return Err(format!(
                "user_factors {users:?} and item_factors {items:?} must be [users, d] and [items, d]"
            ));
        }
        if bias != [items[0]] {
            return Err(format!(
                "item_bias {bias:?} must be [items] = [{}]",
                items[0]
            ));
        }
        Ok(Recommender {
            users: users[0],
            items: items[0],
            user_factors,
            item_factors,
            item_bias,
        })
    }

    fn infer(&self, request: Request) -> Result<Vec<Output>, InferError> {
        let k = request
            .parameter_in_range("k", 1..=self.items)?
            .unwrap_or(DEFAULT_K);
        let ids = request.numeric("user_id")?;
        // An id outside 0..users is the client's mistake: the host names it.
        let users = self.user_factors.embedding(ids).map_err(|e| match e {
            Error::InvalidArgument(m) => InferError::invalid_input(format!(
                "user_id out of range (ids are 0..{}): {m}",
                self.users
            )),
            other => other.into(),
        })?;
        let scores = users.linear_t(&self.item_factors, Some(&self.item_bias), None)?;
        let (values, indices) = scores.top_k(k)?;
        Ok(vec![
            Output::numeric("items", indices),
            Output::numeric("scores", values),
        ])
    }
}

export_model!(Recommender);
