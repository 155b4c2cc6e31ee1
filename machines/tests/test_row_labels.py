from django.template import Context, Template
from django.utils import translation


def test_the_delete_label_names_the_host_once_escaped_in_each_language():
    template = Template('{% load i18n machine_rows %}{% delete_host_label as label %}'
                        '<a aria-label="{{ label|with_host:host }}">')
    with translation.override("en"):
        assert template.render(Context({"host": 'a<b>&"c'})) == '<a aria-label="Delete a&lt;b&gt;&amp;&quot;c">'
    with translation.override("ja"):
        html = template.render(Context({"host": "node-1"}))
    assert "node-1" in html and "Delete" not in html
