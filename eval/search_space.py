"""The search spaces of eval/search_prompts.py: per dataset, the prompt templates and verbalizer sets of
the zero-shot phase (SEARCH) and the few-shot settings (FEW_SHOT_SPACE). Data only, chosen before any dev
score."""

from __future__ import annotations

from typing import Any

# Label order and names follow the shipped task YAMLs. Verbalizer lists: first entry = the word used in
# few-shot demonstrations; all entries are pooled by log-sum-exp.
SEARCH: dict[str, dict[str, Any]] = {
    "sst2": {
        "task": "sentiment",
        "dev": "sst2-dev",
        "templates": {
            "opinion": 'Movie review: "{{ text }}"\nThe reviewer\'s opinion of the movie is',
            "sentiment": "Review: {{ text }}\nSentiment:",
            "it-was": "{{ text }} It was",
            "all-in-all": 'Review: "{{ text }}"\nAll in all, the movie was',
            "question": "Review: {{ text }}\nQuestion: Is this review positive or negative?\nAnswer:",
            "chat": (
                "<|im_start|>user\nIs the sentiment of this movie review positive or negative?\n\n"
                "{{ text }}<|im_end|>\n<|im_start|>assistant\nThe sentiment is"
            ),
        },
        "verbalizers": {
            "pos/neg": {"negative": [" negative"], "positive": [" positive"]},
            "good/bad": {"negative": [" bad"], "positive": [" good"]},
            "great/terrible": {"negative": [" terrible"], "positive": [" great"]},
            "pn+gb": {"negative": [" negative", " bad"], "positive": [" positive", " good"]},
            "pn+gb+gt": {
                "negative": [" negative", " bad", " terrible"],
                "positive": [" positive", " good", " great"],
            },
            "gb+gt": {"negative": [" bad", " terrible"], "positive": [" good", " great"]},
            "wide": {
                "negative": [" negative", " bad", " terrible", " awful", " poor", " boring"],
                "positive": [" positive", " good", " great", " excellent", " wonderful", " fun"],
            },
        },
    },
    "ag_news": {
        "task": "ag_news",
        "dev": "ag_news-dev",
        "templates": {
            "topic-is": "Article: {{ text }}\nThe topic of this news article is",
            "topic-colon": "Article: {{ text }}\nTopic:",
            "about": "News: {{ text }}\nThis article is about",
            "section": "{{ text }}\nThis story appeared in the newspaper section:",
            "instruct": {
                "instruction": "Classify the news article as World, Sports, Business or Technology.\n\n",
                "prompt": "Article: {{ text }}\nCategory:",
            },
        },
        "verbalizers": {
            "plain": {
                "world": [" world"],
                "sports": [" sports"],
                "business": [" business"],
                "technology": [" technology"],
            },
            "capital": {
                "world": [" World"],
                "sports": [" Sports"],
                "business": [" Business"],
                "technology": [" Technology"],
            },
            "sci-tech": {
                "world": [" world"],
                "sports": [" sports"],
                "business": [" business"],
                "technology": [" technology", " science"],
            },
            "pooled": {
                "world": [" world", " politics", " international"],
                "sports": [" sports", " sport"],
                "business": [" business", " economy", " finance"],
                "technology": [" technology", " science", " tech", " computer", " internet"],
            },
            "pooled-both-cases": {
                "world": [" World", " world", " politics", " international"],
                "sports": [" Sports", " sports", " sport"],
                "business": [" Business", " business", " economy", " finance"],
                "technology": [" Technology", " technology", " Science", " science", " tech", " internet"],
            },
        },
    },
    "trec": {
        "task": "trec",
        "dev": "trec-dev",
        "templates": {
            "answer-is-a": "Question: {{ text }}\nThe answer to this question is a",
            "answer-type": "Question: {{ text }}\nAnswer type:",
            "asks-for": "Question: {{ text }}\nThis question asks for a",
            "instruct": {
                "instruction": (
                    "Classify the question by the type of its answer: abbreviation, entity, description, "
                    "person, location or number.\n\n"
                ),
                "prompt": "Question: {{ text }}\nAnswer type:",
            },
        },
        "verbalizers": {
            "shipped": {
                "abbreviation": [" abbreviation"],
                "entity": [" entity"],
                "description": [" description"],
                "human": [" person"],
                "location": [" location"],
                "number": [" number"],
            },
            "pooled": {
                "abbreviation": [" abbreviation"],
                "entity": [" entity", " thing", " object"],
                "description": [" description", " definition", " reason"],
                "human": [" person", " human", " name", " people"],
                "location": [" location", " place", " country", " city"],
                "number": [" number", " date", " quantity", " amount"],
            },
            "pooled-no-entity": {
                "abbreviation": [" abbreviation"],
                "entity": [" thing", " object"],
                "description": [" description", " definition", " reason", " explanation"],
                "human": [" person", " name"],
                "location": [" location", " place"],
                "number": [" number", " date", " quantity"],
            },
            "simple": {
                "abbreviation": [" abbreviation"],
                "entity": [" thing"],
                "description": [" definition"],
                "human": [" person"],
                "location": [" place"],
                "number": [" number"],
            },
        },
    },
}

# few-shot search per dataset: K values, selections, seeds (the few-shot file always has
# search_prompts.FEW_SHOT_FILE_ROWS rows)
FEW_SHOT_SPACE = {
    "sst2": {
        "templates": 3,  # the 3 best zero-shot templates (random selection); knn only for the best one
        "shots": [4, 8, 16],
        "select": ["random", "knn"],
        "seeds": [0, 1, 2],
        "knn_seeds": [0, 1],
        "knn16_seeds": [0],  # 16-shot knn re-encodes ~700 tokens per row (about 30 min on a busy 2-core CPU)
    },
    "ag_news": {"templates": 1, "shots": [4, 8], "select": ["random"], "seeds": [0, 1, 2]},
    "trec": {"templates": 1, "shots": [6, 12], "select": ["random"], "seeds": [0, 1, 2]},
}
