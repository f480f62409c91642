"""Errors whose message is meant for the user (shown as a short ephemeral reply in Discord)."""


class UserError(Exception):
    """Bad input or a request that cannot be served now; str(error) says why, briefly."""


class TrainingError(RuntimeError):
    """Training could not run (the base model cannot be loaded, no data...); the job fails with str()."""


class NoImprovement(TrainingError):
    """The trained weights fit the held-out posts no better than the base did (also after the retry at
    a lower learning rate): nothing is published, and the requester is told why."""

    def __init__(
        self,
        initial_val_loss: float,
        best_val_loss: float,
        learning_rates: list[float],
        model: str = "the model",
    ):
        import math

        self.initial_val_loss = initial_val_loss
        self.best_val_loss = best_val_loss
        self.learning_rates = learning_rates
        rates = " and ".join(f"{lr:g}" for lr in learning_rates)
        super().__init__(
            f"the posts did not improve {model}: held-out perplexity "
            f"{math.exp(initial_val_loss):.1f} before → {math.exp(best_val_loss):.1f} at best after "
            f"training (learning rate {rates}). Nothing was saved; more or longer posts may help."
        )
