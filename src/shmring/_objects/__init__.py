"""Python objects over the endpoint cores: serializers, frames, streamed records, views."""
