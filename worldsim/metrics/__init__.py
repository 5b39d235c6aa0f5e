"""Game-agnostic measures of frames and worlds: image metrics, the inverse-dynamics classifier, the
two-sample classifier and the action-response test."""
