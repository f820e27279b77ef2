package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Verify checks a directory written by Write: results.json decodes, every
// workload has jobs whose every target (zos and each anchor) has a
// non-zero figure, report.md names every workload, and each plot exists as
// a PNG of the expected size and an SVG that parses as XML. It returns the
// decoded report.
func Verify(dir string) (*Report, error) {
	r, err := Read(dir)
	if err != nil {
		return nil, err
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		return nil, err
	}
	if len(r.Workloads) == 0 {
		return r, errors.New("report: no workloads")
	}
	for _, w := range r.Workloads {
		if err := w.Validate(); err != nil {
			return r, err
		}
		if len(w.Jobs) == 0 {
			return r, fmt.Errorf("report: %s: no jobs", w.Name)
		}
		if !bytes.Contains(md, []byte("## "+w.Name+"\n")) {
			return r, fmt.Errorf("report: report.md has no section %s", w.Name)
		}
		for _, j := range w.Jobs {
			for _, x := range j.Results {
				if !(x.Value > 0) {
					return r, fmt.Errorf("report: %s/%s on %s: figure %v", w.Name, j.Name, x.Target, x.Value)
				}
			}
			if err := checkPlot(dir, PlotName(w.Name, j.Name, "bars"), BarWidth); err != nil {
				return r, err
			}
		}
		if len(w.Series) > 0 {
			if err := checkPlot(dir, PlotName(w.Name, "", "throughput"), SeriesWidth); err != nil {
				return r, err
			}
		}
	}
	return r, nil
}

func checkPlot(dir, name string, width interface{ Dots(float64) float64 }) error {
	base := filepath.Join(dir, PlotDir, name)
	f, err := os.Open(base + ".png")
	if err != nil {
		return err
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		return fmt.Errorf("report: %s.png: %w", name, err)
	}
	wantW, wantH := int(width.Dots(96)+0.5), int(PlotHeight.Dots(96)+0.5)
	if b := img.Bounds(); b.Dx() != wantW || b.Dy() != wantH {
		return fmt.Errorf("report: %s.png is %dx%d, want %dx%d", name, b.Dx(), b.Dy(), wantW, wantH)
	}
	svg, err := os.ReadFile(base + ".svg")
	if err != nil {
		return err
	}
	d := xml.NewDecoder(bytes.NewReader(svg))
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("report: %s.svg: %w", name, err)
		}
		if s, ok := tok.(xml.StartElement); ok && root == "" {
			root = s.Name.Local
		}
	}
	if !strings.EqualFold(root, "svg") {
		return fmt.Errorf("report: %s.svg: root element %q", name, root)
	}
	return nil
}
