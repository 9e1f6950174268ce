"""Channels and their endpoints (Producer, Consumer, Claim, RecordView), and asyncio."""
