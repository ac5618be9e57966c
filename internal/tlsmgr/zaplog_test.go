package tlsmgr

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelInfo,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	zl := zap.New(newZapCore(slog.New(h))).Named("obtain").With(zap.String("identifier", "localhost"))

	zl.Debug("dropped: below the handler's level")
	zl.Info("lock acquired", zap.Int("attempt", 2))
	zl.Error("could not get certificate", zap.Error(errors.New("boom")))

	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`level=INFO msg="lock acquired" logger=obtain attempt=2 identifier=localhost`,
		`level=ERROR msg="could not get certificate" logger=obtain error=boom identifier=localhost`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
