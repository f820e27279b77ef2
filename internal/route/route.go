// Package route names an HTTP API route once, for both sides: the handler
// registers Route.Pattern on its http.ServeMux, the client builds the
// request path with Route.URL. Each API package (orchestrator/api,
// blockd/vdiskapi, flist/hub) declares its routes as Route values and lists
// them in a Routes slice, which the route × role test of node walks: a new
// route that is not in that test's table fails it.
package route

import (
	"fmt"
	"net/url"
	"strings"
)

// Route is a method and a path pattern in http.ServeMux syntax
// ("/api/v1/vdisks/{name}/snapshots/{snap}", "{key...}" for a rest of
// path).
type Route struct {
	Method string
	Path   string
}

// New returns the route method path.
func New(method, path string) Route { return Route{Method: method, Path: path} }

// Pattern is the http.ServeMux pattern: "GET /api/v1/cluster".
func (r Route) Pattern() string { return r.Method + " " + r.Path }

func (r Route) String() string { return r.Pattern() }

// URL is the request path with the wildcards filled in order by args, each
// escaped with url.PathEscape ("{key...}" keeps its slashes: each segment
// is escaped). A wrong number of args is a programming error: URL panics.
func (r Route) URL(args ...string) string {
	var b strings.Builder
	rest := r.Path
	n := 0
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(rest)
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			panic(fmt.Sprintf("route %s: unclosed wildcard", r))
		}
		b.WriteString(rest[:i])
		name := rest[i+1 : i+j]
		if n >= len(args) {
			panic(fmt.Sprintf("route %s: %d path arguments, want more", r, len(args)))
		}
		if strings.HasSuffix(name, "...") {
			segs := strings.Split(args[n], "/")
			for k, s := range segs {
				segs[k] = url.PathEscape(s)
			}
			b.WriteString(strings.Join(segs, "/"))
		} else {
			b.WriteString(url.PathEscape(args[n]))
		}
		n++
		rest = rest[i+j+1:]
	}
	if n != len(args) {
		panic(fmt.Sprintf("route %s: %d path arguments, want %d", r, len(args), n))
	}
	return b.String()
}

// Query appends q to a path built by URL (nothing if q is empty).
func Query(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}
