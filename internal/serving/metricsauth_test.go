package serving

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestDecisionCacheExpiresAndStaysBounded(t *testing.T) {
	now := time.Unix(0, 0)
	c := newDecisionCache(func() time.Time { return now })
	allow, deny := decisionKey("a", "/metrics", "GET"), decisionKey("b", "/metrics", "GET")
	c.put(allow, http.StatusOK)
	c.put(deny, http.StatusForbidden)
	if code, ok := c.get(allow); !ok || code != http.StatusOK {
		t.Fatalf("allow: %d %v", code, ok)
	}
	now = now.Add(denyTTL)
	if _, ok := c.get(deny); ok {
		t.Error("a refusal outlived its TTL")
	}
	if _, ok := c.get(allow); !ok {
		t.Error("an allow expired with the refusal's TTL")
	}
	now = now.Add(allowTTL)
	if _, ok := c.get(allow); ok {
		t.Error("an allow outlived its TTL")
	}
	if decisionKey("a", "/metrics", "GET") == decisionKey("a", "/other", "GET") {
		t.Error("the path is not part of the key")
	}
	for i := range 3 * maxDecisions {
		c.put(decisionKey(fmt.Sprint(i), "/metrics", "GET"), http.StatusOK)
	}
	if len(c.m) > maxDecisions {
		t.Errorf("%d decisions kept, want at most %d", len(c.m), maxDecisions)
	}
}
