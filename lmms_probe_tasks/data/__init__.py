"""Document builders of the probe tasks: shapes (generated), COCO, SNLI-VE."""
