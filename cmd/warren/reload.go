package main

import (
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"

	"github.com/warren-proxy/warren/internal/conf"
)

// reloadOnHUP re-reads a proxy's or an agent's config file on SIGHUP
// (`systemctl reload`), until the returned stop is called. A file that no
// longer loads or checks is reported and changes nothing. Otherwise the
// file's log level applies at once (unless a flag set the level), and
// every other setting that differs from running's is named in one line:
// those need a restart, which drains (README: "Drain"). Join tokens,
// roles, locks and dynamic resources are the cluster's replicated
// configuration and need neither.
func reloadOnHUP(log *slog.Logger, load func() (conf.Log, any, error), running any, lo *logOptions, level *slog.LevelVar) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-hup:
			}
			file, cfg, err := load()
			if err != nil {
				log.Error("reload: the config file is not valid; nothing changed", "err", err)
				continue
			}
			lv, fixed, err := lo.level(file)
			switch {
			case err != nil:
				log.Error("reload: nothing changed", "err", err)
				continue
			case fixed:
				log.Info("reload: the log level stays as its flag set it", "level", level.Level().String())
			case lv != level.Level():
				// Set first, and said at warn: seen at any level but error.
				from := level.Level()
				level.Set(lv)
				log.Warn("reload: log level changed", "from", from.String(), "to", lv.String())
			}
			if changed := changedSettings(running, cfg); len(changed) > 0 {
				log.Warn("reload: these settings changed in the file and apply only after a restart (which drains)", "settings", strings.Join(changed, ","))
			} else {
				log.Info("reload: done; no other setting changed")
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

// changedSettings names the top-level settings (by their YAML names) of
// two configs of one type that differ, leaving out log and what is not
// read from the file.
func changedSettings(a, b any) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() || va.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := range va.NumField() {
		name, _, _ := strings.Cut(va.Type().Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" || name == "log" {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, name)
		}
	}
	return out
}
