"""The OpenAI Images dialect (also AIGNE Hub's `/api/images/generations`). See docs/api/openai.md."""
